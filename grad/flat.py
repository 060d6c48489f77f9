"""One flat buffer for many arrays: gather them into a contiguous 1-D array, scatter it back.

A model's parameters (and their gradients) are a list of arrays of different shapes. Operations
that treat them all alike -- summing gradients across processes with one MPI ``Allreduce``, an
optimiser update written once over every element -- are cheaper on ONE contiguous buffer than on
twenty small ones: one call instead of twenty, and one large message instead of many small ones.
``FlatLayout`` records where each array lives in that buffer::

    shapes   [(4, 3), (4,), (2, 4)]
    sizes    [12, 4, 8]
    offsets  [0, 12, 16]          total 24
    buffer   |------ a0 (12) ------|-- a1 (4) --|---- a2 (8) ----|

``gather(arrays)`` copies the arrays into a new buffer (``None`` entries become zeros: a parameter
that got no gradient contributes nothing to a sum); ``scatter(buffer)`` cuts the buffer back into
arrays of the recorded shapes. On NumPy and CuPy these are views of the buffer (a contiguous slice
reshaped), so writing the buffer is seen through them; array_api_strict may copy.

Everything goes through the backend namespace ``xp`` (``xp.concat``, ``xp.reshape``, slicing), so
the same code runs on NumPy, CuPy and array_api_strict arrays; moving a CuPy buffer through host
memory (for a transport that only reads host memory) is the caller's choice
(``grad.backend.to_numpy`` / ``from_numpy``).

``FlatParameters(params)``: the parameters LIVE in one buffer
---------------------------------------------------------------
``FlatLayout`` copies. ``FlatParameters`` goes one step further: it gathers the parameters once
into ``data`` and then rebinds each ``p.data`` to its view of that buffer, so the buffer IS the
parameters. An update written on ``data`` (Adam's few whole-buffer passes,
``grad.optim.adam_step``), a broadcast into ``data`` or an ``Allreduce`` over the gradient buffer
is one call over every parameter::

    params      W (4, 3)        b (4,)      V (2, 4)
    p.data      view [0:12]     view [12:16] view [16:24]     (reshaped)
    data        |------ W ------|---- b ----|------ V ------|  (24,)  the one buffer
    grad        |------ gW -----|-- zeros --|------ gV -----|  (24,)  gather_grads(); b had none
    p.grad      view [0:12]     None         view [16:24]

Gradients are made by the backward sweep as separate arrays; ``gather_grads()`` copies them
into a NEW flat gradient buffer (one copy; zeros where a parameter got no gradient) and points
each ``p.grad`` at its view, so that clipping (``clip_grad_norm_``), the MPI ``Allreduce``
(``minis2s.distributed``) and Adam all work on that same buffer; a second call finds the views
in place and copies nothing. ``zero_grad`` (of the optimizer or the module) lets the buffer go
with the gradients, so it does not live on through the next forward pass. A new buffer each step (not one reused) keeps the rule that an
array once handed out as ``p.grad`` is never overwritten by a later step.

What may break the tie, and what happens then:

* code that REBINDS ``p.data`` (``p.data = new``: an optimiser's out-of-place update, the
  reference Adam, ``Module.to``) takes the parameter out of the buffer. ``is_intact()`` sees it
  (an identity test per parameter); ``reattach()`` copies the new values into the view and
  rebinds the view (same shape, dtype and backend), or returns False (the buffer must be
  rebuilt: the optimiser does so). Code that means to write values into a parameter calls
  ``assign(p, value)``, which writes INTO the view (``Module.load_state_dict``, the MPI
  broadcast);
* a backend whose slices are not views (the array API standard leaves it to the library):
  ``gives_views()`` probes the active backend once; where it says no, nothing is flattened
  (``grad.optim.Adam`` keeps its per-parameter loop) -- an honest fall-back, not a silent copy.

A shared (tied) parameter appears once in ``Module.parameters()`` and so once in the buffer;
``FlatParameters`` refuses a list that names one twice, parameters of different dtypes or of
different backends.
"""
from __future__ import annotations

import math

from . import backend as B


class FlatLayout:
    """Where each of a list of arrays (given by their shapes and one common dtype) sits in one
    contiguous 1-D buffer of ``total`` elements."""

    def __init__(self, shapes, dtype):
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.offsets = []
        at = 0
        for n in self.sizes:
            self.offsets.append(at)
            at += n
        self.total = at
        self.dtype = dtype

    @classmethod
    def of(cls, arrays) -> "FlatLayout":
        """The layout of a list of arrays, which must share one dtype (the buffer has one)."""
        arrays = list(arrays)
        if not arrays:
            raise ValueError("FlatLayout.of needs at least one array")
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            names = ", ".join(sorted(B.dtype_name(d) for d in dtypes))
            raise ValueError(f"a flat buffer holds one dtype; got arrays of {names}")
        return cls([a.shape for a in arrays], arrays[0].dtype)

    def __len__(self) -> int:
        return len(self.shapes)

    def gather(self, arrays):
        """A new contiguous buffer ``(total,)`` holding ``arrays`` in order; ``None`` -> zeros."""
        xp = B.xp
        arrays = list(arrays)
        if len(arrays) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} arrays, got {len(arrays)}")
        like = next((a for a in arrays if a is not None), None)
        pieces = []
        for i, a in enumerate(arrays):
            if a is None:
                if like is None:
                    pieces.append(B.new((self.sizes[i],), 0.0, B.dtype_name(self.dtype)))
                else:
                    pieces.append(B.zeros((self.sizes[i],), like=like))
                continue
            if tuple(a.shape) != self.shapes[i]:
                raise ValueError(f"array {i} has shape {tuple(a.shape)}, the layout says "
                                 f"{self.shapes[i]}")
            if a.dtype != self.dtype:
                a = xp.astype(a, self.dtype)
            pieces.append(xp.reshape(a, (-1,)))                       # (n_i,)
        return xp.concat(pieces)                                       # (total,), a copy

    def scatter(self, buffer) -> list:
        """The arrays of the layout, cut out of ``buffer`` ``(total,)`` (views where the backend
        gives them)."""
        xp = B.xp
        if tuple(buffer.shape) != (self.total,):
            raise ValueError(f"buffer has shape {tuple(buffer.shape)}, the layout needs ({self.total},)")
        return [xp.reshape(buffer[o:o + n], s)
                for o, n, s in zip(self.offsets, self.sizes, self.shapes)]


# ============================================================================ living in a buffer
CPU_CHUNK = 1 << 17          # elements per piece of a whole-buffer pass on the CPU (0.5 MiB f32)


def pieces(start: int, stop: int):
    """``[a, b)`` ranges covering ``[start, stop)`` that a pass over a flat buffer is cut into.

    On the CPU an elementwise pass over a buffer larger than the cache streams every temporary
    through main memory: Adam's dozen passes over a 16M-element buffer took longer than the same
    passes parameter by parameter. Cut into pieces of ``CPU_CHUNK`` elements the temporaries stay
    in the cache (measured on the benchmark's small and medium models: pieces of 2^17 to 2^18
    elements were the fastest). On a GPU (CuPy) one piece: each pass is one kernel launch."""
    step = (stop - start) if B.name() == "cupy" else CPU_CHUNK
    step = max(step, 1)
    return [(a, min(a + step, stop)) for a in range(start, stop, step)]


_VIEWS = {}                  # backend name -> whether its slices of a 1-D buffer are views


def gives_views() -> bool:
    """Whether the active backend gives views: a reshaped slice of a 1-D buffer sees a later
    in-place write to the buffer, and an in-place write into the slice reaches the buffer.
    Probed once per backend on a 4-element array."""
    name = B.name()
    if name not in _VIEWS:
        xp = B.xp
        buf = B.new((4,), 0.0, "float32")
        view = xp.reshape(buf[1:3], (2, 1))
        buf += 1.0                                       # buffer -> view
        view *= 3.0                                      # view -> buffer
        seen = B.to_numpy(buf).tolist()
        _VIEWS[name] = seen == [1.0, 3.0, 3.0, 1.0] and B.to_numpy(view).ravel().tolist() == [3.0, 3.0]
    return _VIEWS[name]


def _backend_of(array) -> str:
    return type(array).__module__.split(".")[0]


def flattenable(params) -> bool:
    """Whether ``FlatParameters(params)`` would accept ``params``: distinct, floating, one dtype,
    one backend, and a backend that gives views."""
    params = list(params)
    if not params or len({id(p) for p in params}) != len(params):
        return False
    if len({p.data.dtype for p in params}) != 1 or not B.is_floating(params[0].data.dtype):
        return False
    if len({_backend_of(p.data) for p in params}) != 1 or _backend_of(params[0].data) != \
            _backend_of(B.new((1,), 0.0, "float32")):
        return False
    return gives_views()


class _Member:
    """What ``p._flat`` holds: the ``FlatParameters`` a parameter lives in and its index there.
    A deep copy of the parameter (``copy.deepcopy`` of a model) is a separate array, in no
    buffer: the membership is not copied."""

    __slots__ = ("flat", "index")

    def __init__(self, flat, index: int):
        self.flat, self.index = flat, index

    def __deepcopy__(self, memo):
        return None


class FlatParameters:
    """``params`` (tensors, usually ``Parameter``s) moved into one contiguous buffer ``data``
    ``(total,)``; each ``p.data`` becomes its view (see the module docstring's picture)."""

    def __init__(self, params):
        params = list(params)
        if len({id(p) for p in params}) != len(params):
            raise ValueError("FlatParameters: a parameter appears twice in the list (a shared "
                             "parameter must be given once)")
        self.layout = FlatLayout.of([p.data for p in params])        # one dtype, or ValueError
        if len({_backend_of(p.data) for p in params}) != 1:
            raise ValueError("FlatParameters: the parameters live on different backends")
        if not gives_views():
            raise ValueError(f"FlatParameters: backend {B.name()!r} does not give views of a "
                             "buffer; keep the parameters separate (e.g. Adam(..., flat=False))")
        self.params = params
        self.data = self.layout.gather([p.data for p in params])      # (total,) a copy
        self.views = self.layout.scatter(self.data)                   # views of it
        for i, (p, view) in enumerate(zip(params, self.views)):
            p.data = view
            p._flat = _Member(self, i)
        self.grad = None                                              # (total,) gather_grads()
        self.grad_views = None
        self._had = None                                              # which had a gradient

    def __len__(self) -> int:
        return len(self.params)

    @property
    def total(self) -> int:
        return self.layout.total

    def is_intact(self) -> bool:
        """Whether every parameter's ``data`` is still its view of ``data``."""
        return all(p.data is view for p, view in zip(self.params, self.views))

    def reattach(self) -> bool:
        """Copy the values of every parameter whose ``data`` was rebound back into its view and
        rebind the view. False (nothing left half done) if one changed shape, dtype or backend."""
        moved = [(p, view) for p, view in zip(self.params, self.views) if p.data is not view]
        for p, view in moved:
            if (tuple(p.data.shape) != tuple(view.shape) or p.data.dtype != view.dtype
                    or _backend_of(p.data) != _backend_of(view)):
                return False
        for i, (p, view) in enumerate(zip(self.params, self.views)):
            if p.data is not view:
                view[...] = p.data
                p.data = view
            p._flat = _Member(self, i)
        return True

    def gather_grads(self):
        """The flat gradient buffer ``(total,)``: every ``p.grad`` copied into a new buffer
        (zeros where ``p.grad`` is None), each present ``p.grad`` then its view. Copies nothing
        when the gradients still are the views of the last buffer (and the same ones are None)."""
        if self.grad is not None and all(
                (p.grad is gv) if had else (p.grad is None)
                for p, gv, had in zip(self.params, self.grad_views, self._had)):
            return self.grad
        self.grad = self.layout.gather([p.grad for p in self.params])     # (total,) new
        self.grad_views = self.layout.scatter(self.grad)
        self._had = [p.grad is not None for p in self.params]
        for p, gv in zip(self.params, self.grad_views):
            if p.grad is not None:
                p.grad = gv
        return self.grad

    def release_grads(self) -> None:
        """Forget the last gradient buffer (``zero_grad`` calls this), so that it is freed with
        the gradients instead of living on through the next forward pass."""
        self.grad = self.grad_views = self._had = None


def flat_of(params):
    """The ``FlatParameters`` that holds exactly ``params`` (same tensors, same order) with every
    parameter in its buffer (rebound ones are reattached); None if there is none."""
    params = list(params)
    if not params:
        return None
    owner = getattr(params[0], "_flat", None)
    if owner is None:
        return None
    flat = owner.flat
    if len(flat.params) != len(params) or any(p is not q for p, q in zip(params, flat.params)):
        return None
    if not flat.is_intact() and not flat.reattach():
        return None
    return flat


def assign(p, value) -> None:
    """Set the values of parameter ``p`` to the backend array ``value``: written INTO its view
    of a flat buffer when it lives in one (same shape, dtype and backend), so the buffer stays
    the parameters; otherwise ``p.data`` is rebound to ``value``, as before flat buffers."""
    owner = getattr(p, "_flat", None)
    if owner is not None:
        view = owner.flat.views[owner.index]
        if (p.data is view and tuple(value.shape) == tuple(view.shape)
                and value.dtype == view.dtype and _backend_of(value) == _backend_of(view)):
            view[...] = value
            return
    p.data = value
