"""Utilities on modules and parameters: gradient clipping, a block in eval mode."""
from __future__ import annotations

from .. import backend as B
from ..flat import flat_of, pieces
from ..modes import fused
from ..tensor import Tensor


def clip_grad_norm_(parameters, max_norm: float) -> Tensor:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``;
    returns the norm before clipping as a 0-d tensor (see ``clip_gradients_reference``).

    When ``parameters`` are exactly the parameters of one flat buffer (``grad.flat``, as
    ``grad.optim.Adam`` makes by default) the norm is taken over the one gradient buffer and the
    buffer is scaled in place (``clip_gradients``); otherwise parameter by parameter."""
    return clip_gradients(list(parameters), max_norm)


def clip_gradients_reference(parameters, max_norm: float) -> Tensor:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping as a 0-d tensor (in the gradients' dtype). The squares are
    summed in float64, so a large but finite float32 gradient never reads as an infinite norm
    (which would make the scale 0 and silently skip the update). The scale ``min(1, max_norm / (norm + 1e-6))``
    is computed on the device, so no value is copied to the host (no synchronisation on a GPU)
    unless the caller asks for it with ``.item()``.

    Only calls that NumPy 2, CuPy >= 14.1 and array_api_strict all accept: ``xp.minimum`` of two
    arrays (not ``xp.clip(..., max=)``: CuPy's ``clip(a, a_min, a_max)`` has no ``max=``).
    """
    xp = B.xp
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return Tensor(B.new((), 0.0, "float32"))
    total = None
    for p in params:                       # summed in float64: finite for any finite gradient
        g64 = xp.astype(p.grad, xp.float64)
        rows = xp.reshape(g64, (-1, g64.shape[-1]) if g64.ndim else (1, 1))   # (R, C)
        sq = xp.sum(B.row_dot(rows, rows))  # a dot product per row: no squared copy
        total = sq if total is None else total + sq
    norm = xp.astype(xp.sqrt(total), params[0].grad.dtype)
    ratio = max_norm / (norm + 1e-6)                                  # 0-d, on the device
    scale = xp.minimum(B.full((), 1.0, like=ratio), ratio)            # min(1, ratio), no sync
    for p in params:
        p.grad = p.grad * xp.astype(scale, p.grad.dtype)   # out of place: grads may be views
    return Tensor(norm)


@fused(reference=clip_gradients_reference)
def clip_gradients(parameters, max_norm: float) -> Tensor:
    """The same clipping over one flat gradient buffer (``FlatParameters.gather_grads``: the
    gradients become views of it): one float64 sum of squares (a dot product per piece:
    ``backend.row_dot``, no squared copy), one in-place scaling. Parameters that do not share
    one flat buffer take the per-parameter loop of the reference."""
    flat = flat_of(parameters)
    if flat is None or all(p.grad is None for p in parameters):
        return clip_gradients_reference(parameters, max_norm)
    xp = B.xp
    g = flat.gather_grads()                                # (total,) zeros where no gradient
    total = None
    for a, b in pieces(0, flat.total):                     # cache-sized pieces on the CPU
        g64 = xp.astype(g[a:b], xp.float64)                # summed in float64, as above
        sq = B.row_dot(g64, g64)                           # g . g: one dot, no squared copy
        total = sq if total is None else total + sq
    norm = xp.astype(xp.sqrt(total), g.dtype)
    limit = max_norm / (norm + 1e-6)                       # 0-d, on the device
    g *= xp.astype(xp.minimum(B.full((), 1.0, like=limit), limit), g.dtype)   # in place: ours
    return Tensor(norm)


class eval_mode:
    """``with eval_mode(model):`` runs the block with ``model`` in eval mode (no dropout) and
    puts back the mode it had, training or not, even when the block raises (search, scoring,
    validation and generation all use it)."""

    def __init__(self, module):
        self.module = module
        self._was_training = []

    def __enter__(self):
        self._was_training.append(self.module.training)
        self.module.eval()
        return self.module

    def __exit__(self, *exc_info):
        self.module.train(self._was_training.pop())
        return False
