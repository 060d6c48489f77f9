"""Optimizers: ``SGD`` (with momentum) and ``Adam``, with PyTorch's update rules.

State is kept per parameter *in parameter order* (a list, never a dict keyed by ``id``), so
``state_dict()`` can be saved to disk and loaded into a fresh optimizer to resume training.

``Adam(params, flat=None)`` moves the parameters into one flat buffer (``grad.flat.FlatParameters``:
each ``p.data`` becomes a view of it) when they share a dtype and a backend that gives views, and
then updates the moments and the parameters with a few whole-buffer passes (``adam_step``)
instead of a loop over the parameters; its moments ``exp_avg`` / ``exp_avg_sq`` are views of two
flat buffers of the same layout. ``flat=False`` keeps the per-parameter loop
(``adam_step_reference``, which is also what ``grad.reference_mode()`` runs); ``flat=True``
insists (a clear ``ValueError`` where it cannot be done). The state_dict is the same either way:
per-parameter ``step``, ``exp_avg``, ``exp_avg_sq`` (copies).
"""
from __future__ import annotations

from . import backend as B
from .flat import FlatParameters, flattenable, pieces
from .modes import fused


class Optimizer:
    def __init__(self, params, defaults: dict):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        self.param_groups = [dict(defaults, params=params)]
        self.state = [dict() for _ in params]          # state[i] belongs to params[i]

    @property
    def params(self):
        return self.param_groups[0]["params"]

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.param_groups:
            group["lr"] = value

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
        if getattr(self, "flat", None) is not None:
            self.flat.release_grads()         # the flat gradient buffer goes with them

    def state_dict(self) -> dict:
        """``{"param_groups": [hyper-parameters], "state": [per-parameter dict]}``; arrays are
        backend arrays (convert with ``grad.backend.to_numpy`` to save them)."""
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        # copies: the optimizer updates its state arrays in place, a saved state must not move
        state = [{k: (B.xp.asarray(v, copy=True) if B.is_array(v) else v) for k, v in s.items()}
                 for s in self.state]
        return {"param_groups": groups, "state": state}

    def load_state_dict(self, state_dict: dict) -> None:
        states = state_dict["state"]
        if len(states) != len(self.params):
            raise ValueError(f"optimizer state has {len(states)} parameters, this optimizer has "
                             f"{len(self.params)}")
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            group.update({k: v for k, v in saved.items() if k != "params"})
        restored = []
        for p, s in zip(self.params, states):
            entry = {}
            for k, v in s.items():
                if hasattr(v, "shape") and tuple(v.shape) != ():
                    if tuple(v.shape) != p.shape:
                        raise ValueError(f"optimizer state {k!r} has shape {tuple(v.shape)}, "
                                         f"parameter has {p.shape}")
                    v = B.xp.astype(B.from_numpy(B.to_numpy(v)) if not B.is_array(v) else v, p.dtype)
                elif hasattr(v, "shape"):
                    v = B.to_numpy(v).item()
                entry[k] = v
            restored.append(entry)
        self.state = restored


class SGD(Optimizer):
    """``v = momentum * v + g``; ``p -= lr * v`` (plain ``p -= lr * g`` when momentum is 0)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def step(self) -> None:
        group = self.param_groups[0]
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            g = p.grad if wd == 0 else p.grad + wd * p.data
            if mu:
                buf = state.get("momentum_buffer")
                buf = g if buf is None else mu * buf + g
                state["momentum_buffer"] = buf
                g = buf
            p.data = p.data - lr * g


def adam_update_reference(p, g, state: dict, lr: float, b1: float, b2: float, eps: float) -> None:
    """One Adam update of the parameter ``p`` with gradient ``g``, written as the formulas: the
    moments ``state["exp_avg"]``, ``state["exp_avg_sq"]`` become new arrays, ``t`` is
    ``state["step"]``."""
    xp = B.xp
    t = state["step"]
    m = b1 * state["exp_avg"] + (1.0 - b1) * g                   # first moment (mean of g)
    v = b2 * state["exp_avg_sq"] + (1.0 - b2) * (g * g)         # second moment (mean of g^2)
    m_hat = m / (1.0 - b1 ** t)                                  # bias corrections: m and v
    v_hat = v / (1.0 - b2 ** t)                                  # start at 0
    p.data = p.data - lr * m_hat / (xp.sqrt(v_hat) + eps)
    state["exp_avg"], state["exp_avg_sq"] = m, v


@fused(reference=adam_update_reference)
def adam_update(p, g, state: dict, lr: float, b1: float, b2: float, eps: float) -> None:
    """The same update with the moments changed in place and fewer temporary arrays."""
    xp = B.xp
    t = state["step"]
    m, v = state["exp_avg"], state["exp_avg_sq"]   # owned by the optimizer: in place
    m *= b1
    m += (1.0 - b1) * g
    v *= b2
    v += (1.0 - b2) * (g * g)
    denom = xp.sqrt(v / (1.0 - b2 ** t))
    denom += eps
    update = m / denom
    update *= lr / (1.0 - b1 ** t)
    p.data = p.data - update              # out of place: p.data may be shared


def adam_step_reference(optimizer) -> None:
    """One Adam step, parameter by parameter: ``adam_update`` on each parameter that has a
    gradient (its own step count ``t``; a parameter without a gradient keeps its values and its
    state). This is the loop ``Adam(..., flat=False)`` runs; under ``grad.reference_mode()``
    ``adam_update`` is itself ``adam_update_reference``, the formulas."""
    group = optimizer.param_groups[0]
    lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    for p, state in zip(optimizer.params, optimizer.state):
        if p.grad is None:
            continue
        g = p.grad if wd == 0 else p.grad + wd * p.data
        if not state:
            state["step"] = 0
            state["exp_avg"] = B.zeros(p.shape, like=p.data)
            state["exp_avg_sq"] = B.zeros(p.shape, like=p.data)
        state["step"] += 1
        adam_update(p, g, state, lr, b1, b2, eps)


@fused(reference=adam_step_reference)
def adam_step(optimizer) -> None:
    """The same step over the optimizer's flat buffers: the gradient buffer ``g``, the moments
    ``m``, ``v`` and the parameters ``p`` (all ``(total,)``, one layout), in a few whole-buffer
    passes (made piece by piece on the CPU, so that the temporaries stay in the cache:
    ``grad.flat.pieces``). Parameters that get an update are cut into runs of neighbours with
    the same step count ``t`` (all of them, one run, in an ordinary step); a parameter with no
    gradient breaks a run and is left alone, as in the loop."""
    xp = B.xp
    group = optimizer.param_groups[0]
    lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    flat = optimizer._flat_buffers()
    m_all, v_all, p_all = optimizer._m, optimizer._v, flat.data          # (total,) each
    g_all = flat.gather_grads()                                          # (total,)
    if wd != 0:
        g_all = g_all + wd * p_all
    runs = []                        # [start, stop) in elements, t: neighbours updated together
    for i, (p, state) in enumerate(zip(optimizer.params, optimizer.state)):
        if p.grad is None:
            continue
        if not state:
            optimizer._m_views[i][...] = 0.0
            optimizer._v_views[i][...] = 0.0
            state.update(step=0, exp_avg=optimizer._m_views[i], exp_avg_sq=optimizer._v_views[i])
        state["step"] += 1
        lo, n = flat.layout.offsets[i], flat.layout.sizes[i]
        if runs and runs[-1][1] == lo and runs[-1][2] == state["step"]:
            runs[-1][1] = lo + n
        else:
            runs.append([lo, lo + n, state["step"]])
    scratch = None                   # two piece-sized buffers for the temporaries (out=)
    for lo, hi, t in runs:
        for a, b in pieces(lo, hi):              # cache-sized pieces on the CPU (grad.flat)
            m, v, p, g = m_all[a:b], v_all[a:b], p_all[a:b], g_all[a:b]   # views, (b - a,)
            if scratch is None or scratch.shape[1] < b - a:
                scratch = B.empty((2, b - a), like=g_all)
            s1, s2 = scratch[0, :b - a], scratch[1, :b - a]
            m *= b1
            m += B.into(s1, xp.multiply, 1.0 - b1, g)       # first moment
            v *= b2
            v += B.into(s1, xp.multiply, 1.0 - b2, B.into(s1, xp.multiply, g, g))  # second
            denom = B.into(s2, xp.sqrt, B.into(s2, xp.divide, v, 1.0 - b2 ** t))
            denom += eps
            step = B.into(s2, xp.divide, m, denom)
            step *= lr / (1.0 - b1 ** t)                     # bias-corrected step size
            p -= step                    # in place: the parameters are views of this buffer


class Adam(Optimizer):
    """Adam (Kingma & Ba), as in PyTorch::

        m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    ``weight_decay`` adds ``wd * p`` to the gradient (L2 regularisation, not AdamW).

    ``flat``: None (the default) puts the parameters in one flat buffer when they can share one
    (``grad.flat.flattenable``: one dtype, one backend that gives views, no duplicates) and then
    steps with ``adam_step`` (a few whole-buffer passes); False keeps them separate and steps
    parameter by parameter (``adam_step_reference``: ``adam_update`` on each, in place);
    True requires the flat buffer. Under ``grad.reference_mode()`` both run the per-parameter
    formulas (``adam_update_reference``). The state_dict is the same in every case.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, flat: bool | None = None):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        if flat is None:
            flat = flattenable(self.params)
        self.flat = FlatParameters(self.params) if flat else None
        self._m = self._v = self._m_views = self._v_views = None     # flat moments, first step

    def _flat_buffers(self):
        """The flat parameter buffer, intact (parameters rebound since are copied back; one that
        changed dtype or backend rebuilds it), with ``_m`` / ``_v`` of its layout and every
        parameter's ``exp_avg`` / ``exp_avg_sq`` a view of them (a state loaded or replaced
        since is copied in)."""
        flat = self.flat
        if not flat.is_intact() and not flat.reattach():
            flat = self.flat = FlatParameters(self.params)         # e.g. after Module.to(dtype)
            self._m = None
        if self._m is None:
            self._m = B.zeros((flat.total,), like=flat.data)
            self._v = B.zeros((flat.total,), like=flat.data)
            self._m_views = flat.layout.scatter(self._m)
            self._v_views = flat.layout.scatter(self._v)
        xp = B.xp
        for state, m, v in zip(self.state, self._m_views, self._v_views):
            if not state:
                continue
            for key, view in (("exp_avg", m), ("exp_avg_sq", v)):
                if state[key] is not view:
                    value = state[key]
                    view[...] = value if value.dtype == view.dtype else xp.astype(value, view.dtype)
                    state[key] = view
        return flat

    def step(self) -> None:
        if self.flat is None:
            adam_step_reference(self)          # parameter by parameter
        else:
            adam_step(self)                    # the flat buffers (the loop in reference mode)
