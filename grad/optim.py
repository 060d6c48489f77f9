"""Optimizers: ``SGD`` (with momentum) and ``Adam``, with PyTorch's update rules.

State is kept per parameter *in parameter order* (a list, never a dict keyed by ``id``), so
``state_dict()`` can be saved to disk and loaded into a fresh optimizer to resume training.
"""
from __future__ import annotations

from . import backend as B
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


class Adam(Optimizer):
    """Adam (Kingma & Ba), as in PyTorch::

        m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    ``weight_decay`` adds ``wd * p`` to the gradient (L2 regularisation, not AdamW). Each
    parameter's update is ``adam_update`` (in place; ``adam_update_reference`` under
    ``grad.reference_mode()``).
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self) -> None:
        group = self.param_groups[0]
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            g = p.grad if wd == 0 else p.grad + wd * p.data
            if not state:
                state["step"] = 0
                state["exp_avg"] = B.zeros(p.shape, like=p.data)
                state["exp_avg_sq"] = B.zeros(p.shape, like=p.data)
            state["step"] += 1
            adam_update(p, g, state, lr, b1, b2, eps)
