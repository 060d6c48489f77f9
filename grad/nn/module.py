"""``Module`` and ``Parameter``: PyTorch's contract for layers, in small.

Sub-modules and parameters assigned as attributes are registered in definition order, so
``named_parameters()`` and ``state_dict()`` have a stable order across processes (an optimizer's
saved state is matched to parameters by that order).
"""
from __future__ import annotations

from collections import OrderedDict

from .. import backend as B
from ..flat import assign
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that is a module's learnable weight: a leaf that requires grad."""

    __slots__ = ()
    _is_parameter = True

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


def _backend_of(array) -> str:
    """The backend an array belongs to, from its type's package (``"numpy"``, ``"cupy"``, ...)."""
    return type(array).__module__.split(".")[0]


def _wrong_backend(module_name: str, array) -> None:
    owner, active = _backend_of(array), B.name()
    raise RuntimeError(
        f"{module_name}: parameters are on backend {owner!r} but the active backend is "
        f"{active!r}; use grad.backend.use({owner!r}) (Module.to(backend) moves the parameters, "
        f"not the active backend), or move the module with .to({active!r})")


class Module:
    """Base class of layers and models. Subclasses set parameters and sub-modules as attributes
    in ``__init__`` and define ``forward``; call the module to run it."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError("call Module.__init__() before assigning attributes")
        # A name assigned again keeps its place in the order (as in PyTorch), e.g. a tied weight.
        if not isinstance(value, Parameter):
            params.pop(name, None)
        if not isinstance(value, Module):
            self._modules.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, param)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        for p in self._parameters.values():     # one cheap check, on the first own parameter
            if not B.is_array(p.data) and _backend_of(p.data) != B.name():
                _wrong_backend(type(self).__name__, p.data)
            break
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, mod in self._modules.items():
            yield from mod.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix: str = ""):
        """``(dotted name, Parameter)`` pairs in definition order; a shared parameter once."""
        seen = set()
        for mod_name, mod in self.named_modules(prefix):
            for name, p in mod._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None
            owner = getattr(p, "_flat", None)
            if owner is not None:             # a flat gradient buffer goes with the gradients
                owner.flat.release_grads()

    # ------------------------------------------------------------------ conversion
    def to(self, target) -> "Module":
        """Convert every parameter to a dtype (``"float64"``) or move it to a backend
        (``"numpy"``, ``"cupy"``, ``"array_api_strict"``), in place; returns ``self``.

        Moving to a backend copies the arrays there but does **not** switch the active backend
        (that is global state, chosen by ``grad.backend.use``): the inputs and every array the
        forward pass makes come from the active namespace. So select it too, before or after::

            model.to("cupy")
            grad.backend.use("cupy")        # or: with grad.backend.use("cupy"): model(x)

        Calling a module whose parameters live on another backend than the active one raises
        a ``RuntimeError`` that names both.
        """
        for mod in self.modules():
            for name, p in mod._parameters.items():
                if isinstance(target, str) and target in B.BACKENDS:
                    with B.use(target):
                        p.data = B.from_numpy(p.numpy())
                else:
                    p.data = B.xp.astype(p.data, B.get_dtype(target))
                p.grad = None
        return self

    def double(self) -> "Module":
        return self.to("float64")

    def float(self) -> "Module":
        return self.to("float32")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> "OrderedDict[str, object]":
        """Parameter name -> backend array (not a copy). Shared parameters appear under the name
        they were first registered with."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays (backend or host NumPy) into the parameters, converting to each parameter's
        dtype and backend. Missing, unexpected or mis-shaped keys are reported together."""
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = []
        for k, p in own.items():
            if k in state:
                shape = tuple(getattr(state[k], "shape", ()))
                if shape != p.shape:
                    wrong.append(f"{k}: expected {p.shape}, got {shape}")
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if wrong:
            problems.append("shape mismatch: " + "; ".join(wrong))
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__}: " + " | ".join(problems))
        for k, p in own.items():
            if k in state:
                value = state[k]
                if not B.is_array(value):
                    value = B.from_numpy(B.to_numpy(value))
                assign(p, B.xp.astype(value, p.dtype))    # into its view of a flat buffer, if any

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


class ModuleList(Module):
    """A list of modules whose parameters are registered (named ``0``, ``1``, ...)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
