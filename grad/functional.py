"""Functions built on the primitive ops, PyTorch's ``torch.nn.functional`` in small.

Some are *composed* (``nll_loss``: a gather and a mean, differentiated by the ops they are made
of); others are *fused*: one graph node whose backward is written by hand, because the hand-written
formula is shorter, faster and numerically better (``softmax``, ``log_softmax``,
``cross_entropy``, ``linear``, ``embedding``). The tests check each fused function against a
composed version of the same math.

Every fused function has its composed twin right above it, named as a pair
(``cross_entropy_reference`` / ``cross_entropy``, ``lstm_step_reference`` / ``lstm_step``, ...),
and is declared its fast twin with ``@fused(reference=...)``: inside ``with
grad.reference_mode():`` the twin runs instead (``grad/modes.py``), so every op of the model is
visible, and every gradient is a plain dense array.
"""
from __future__ import annotations

import math

from . import backend as B
from . import ops
from .accumulate import MatmulGrad, OuterGrad
from .modes import fused
from .tensor import Tensor, as_tensor, make


def _dim(dim, axis, ndim: int) -> int:
    """``dim`` or its alias ``axis`` (not both; -1 when neither is given), made non-negative."""
    return ops._resolve_dim(dim, axis, default=-1) % ndim


def _row_max(x: Tensor, d: int) -> Tensor:
    """The maximum along ``d`` as a constant (no graph): subtracted before an exponential so that
    it cannot overflow. Softmax does not depend on it, so it needs no gradient."""
    return Tensor(B.xp.max(x.data, axis=d, keepdims=True))


# =================================================================== softmax and log-softmax
def softmax_reference(x: Tensor, dim: int | None = None, *, axis: int | None = None) -> Tensor:
    """``exp(x - max) / sum(exp(x - max))`` along ``dim``, written with ops."""
    d = _dim(dim, axis, x.ndim)
    e = ops.exp(x - _row_max(x, d))
    return e / ops.sum(e, d, keepdim=True)


@fused(reference=softmax_reference)
def softmax(x: Tensor, dim: int | None = None, *, axis: int | None = None) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim`` (default -1; ``axis`` is an alias), computed as
    ``exp(x - max)`` so that logits of any magnitude give no overflow.

    Backward (y = softmax(x)): ``dx = y * (g - sum(g * y))`` -- the Jacobian ``diag(y) - y y^T``
    applied to ``g``. Both terms matter: dropping the cross term ``y y^T`` is a classic bug.
    """
    xp = B.xp
    d = _dim(dim, axis, x.ndim)
    z = xp.exp(x.data - xp.max(x.data, axis=d, keepdims=True))
    y = z / xp.sum(z, axis=d, keepdims=True)
    def backward(g):
        return (y * (g - xp.sum(g * y, axis=d, keepdims=True)),)
    return make(y, (x,), backward, "softmax")


def log_softmax_reference(x: Tensor, dim: int | None = None, *, axis: int | None = None) -> Tensor:
    """``x - max - log(sum(exp(x - max)))`` along ``dim``, written with ops."""
    d = _dim(dim, axis, x.ndim)
    shifted = x - _row_max(x, d)
    return shifted - ops.log(ops.sum(ops.exp(shifted), d, keepdim=True))


@fused(reference=log_softmax_reference)
def log_softmax(x: Tensor, dim: int | None = None, *, axis: int | None = None) -> Tensor:
    """``x - logsumexp(x)`` along ``dim`` (default -1; ``axis`` is an alias), stable for logits
    of magnitude 1e4.

    Backward (y = log_softmax(x)): ``dx = g - exp(y) * sum(g)``.
    """
    xp = B.xp
    d = _dim(dim, axis, x.ndim)
    shifted = x.data - xp.max(x.data, axis=d, keepdims=True)
    y = shifted - xp.log(xp.sum(xp.exp(shifted), axis=d, keepdims=True))
    def backward(g):
        return (g - xp.exp(y) * xp.sum(g, axis=d, keepdims=True),)
    return make(y, (x,), backward, "log_softmax")


# =============================================================================== losses
def _check_targets(logits_shape, target, name):
    if len(logits_shape) != 2 or target.ndim != 1 or target.shape[0] != logits_shape[0]:
        raise ValueError(f"{name} expects input (N, C) and target (N,), got input "
                         f"{tuple(logits_shape)} and target {tuple(target.shape)}")


def _reduce(losses: Tensor, valid_count, reduction: str) -> Tensor:
    if reduction == "none":
        return losses
    total = ops.sum(losses)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return ops.div(total, Tensor(valid_count))
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nll_loss(log_probs: Tensor, target: Tensor, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of the ``target`` classes: ``-log_probs[n, target[n]]``.

    ``log_probs``: ``(N, C)``; ``target``: ``(N,)`` integer. Targets equal to ``ignore_index``
    (e.g. PAD) contribute nothing, and ``"mean"`` divides by the number of the others (PyTorch's
    meaning). Composed from ``gather`` and arithmetic: autograd derives its backward.
    """
    xp = B.xp
    _check_targets(log_probs.shape, target, "nll_loss")
    t = target.data
    valid = t != ignore_index                                        # (N,)
    safe = xp.where(valid, t, B.full((), 0, like=t))                 # any in-range index
    picked = ops.gather(log_probs, 1, xp.reshape(safe, (-1, 1)))     # (N, 1)
    mask = xp.astype(valid, log_probs.dtype)
    losses = ops.mul(ops.reshape(picked, (-1,)), Tensor(-mask))      # (N,)
    return _reduce(losses, xp.sum(mask), reduction)


def _check_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")


def _softmax_rows_(shifted):
    """Softmax along axis 1 of logits already shifted by their row maximum, computed IN PLACE in
    ``shifted``. Returns ``(p (N, C), row sums of exp (N, 1))``."""
    p = B.exp_(shifted)                                                        # exp(shifted)
    total = B.xp.sum(p, axis=1, keepdims=True)                                 # (N, 1)
    p /= total
    return p, total


def cross_entropy_reference(logits: Tensor, target: Tensor, ignore_index: int = -100,
                            reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy as its definition: ``log_softmax``, then the negative log-likelihood
    of the target (``nll_loss``). With label smoothing ``eps`` the target distribution is
    ``q = (1 - eps) * onehot + eps / C``, so the loss of row n is
    ``(1 - eps) * nll_n - eps * mean_c log p_nc``; rows whose target is ``ignore_index`` count
    for nothing."""
    _check_targets(logits.shape, target, "cross_entropy")
    _check_smoothing(label_smoothing)
    log_p = log_softmax(logits, dim=1)                                         # (N, C)
    if not label_smoothing:
        return nll_loss(log_p, target, ignore_index, reduction)
    valid = B.xp.astype(target.data != ignore_index, logits.dtype)             # (N,) 0/1
    nll = nll_loss(log_p, target, ignore_index, "none")                        # (N,)
    uniform = ops.mean(log_p, 1) * Tensor(valid)                               # (N,) mean_c log p
    losses = nll * (1.0 - label_smoothing) - uniform * label_smoothing         # (N,)
    return _reduce(losses, B.xp.sum(valid), reduction)


@fused(reference=cross_entropy_reference)
def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy, fused: ``log_softmax`` and ``nll_loss`` in one node.

    With label smoothing ``eps`` the target distribution is ``q = (1 - eps) * onehot + eps / C``
    and the loss of row n is ``-sum_c q_c log p_c``. The gradient with respect to the logits is
    simply ``p - q`` per valid row (times the reduction's scale): the reason this pair is fused.

    ``logits``: ``(N, C)``; ``target``: ``(N,)``. Equals ``cross_entropy_reference`` (tested).

    The (N, C) arrays are the largest of a seq2seq training step (N = B * T target tokens, C the
    vocabulary), so this node makes only one of them: ``p`` (the softmax, kept for backward; the
    log-probabilities it needs are taken from the shifted logits before the exponential). The
    rest is done in place (``backend.exp_``, ``backend.add_at_columns``), and backward turns
    ``p`` itself into the gradient. A second backward through a retained graph finds ``p`` used
    up and computes it again from the logits.
    """
    xp = B.xp
    _check_targets(logits.shape, target, "cross_entropy")
    _check_smoothing(label_smoothing)
    x, t = logits.data, target.data
    n_classes = x.shape[1]
    valid = t != ignore_index                                                  # (N,)
    safe = xp.where(valid, t, B.full((), 0, like=t))                           # any in-range class
    mask = xp.astype(valid, x.dtype)                                           # (N,)
    shifted = x - xp.max(x, axis=1, keepdims=True)                             # (N, C)
    picked = xp.reshape(xp.take_along_axis(shifted, xp.reshape(safe, (-1, 1)), axis=1), (-1,))  # (N,)
    shifted_sum = xp.sum(shifted, axis=1) if label_smoothing else None         # (N,)
    p, total = _softmax_rows_(shifted)                                         # (N, C), in place
    log_z = xp.log(total[:, 0])                                                # (N,)
    losses = -(1.0 - label_smoothing) * (picked - log_z)                       # -log p_target
    if label_smoothing:                                   # sum_c log p_c = sum_c shifted - C log Z
        losses = losses - (label_smoothing / n_classes) * (shifted_sum - n_classes * log_z)
    losses = losses * mask                                                     # (N,)
    count = xp.sum(mask)
    if reduction == "none":
        out = losses
    elif reduction == "sum":
        out = xp.sum(losses)
    elif reduction == "mean":
        out = xp.sum(losses) / count
    else:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")

    def backward(g):
        nonlocal p
        scale = g * mask if reduction != "mean" else (g / count) * mask        # (N,) per row
        if p is None:                     # used up by an earlier backward: compute it again
            p, _ = _softmax_rows_(x - xp.max(x, axis=1, keepdims=True))
        dlogits, p = p, None                                  # p's buffer becomes the gradient
        dlogits *= xp.reshape(scale, (-1, 1))                                  # scale * p
        if label_smoothing:
            dlogits -= xp.reshape((label_smoothing / n_classes) * scale, (-1, 1))
        return (B.add_at_columns(dlogits, safe, -(1.0 - label_smoothing) * scale),)  # scale * (p - q)
    return make(out, (logits,), backward, "cross_entropy")


# ============================================================================ layers' math
def linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight^T + bias`` written with ops; every gradient a plain dense array."""
    y = ops.matmul(x, ops.transpose(weight, 0, 1))                  # (..., out)
    return y if bias is None else y + bias


@fused(reference=linear_reference, requires=("accumulate",))
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight^T + bias`` in one node. ``x``: ``(..., in)``, ``weight``: ``(out, in)``,
    ``bias``: ``(out,)``; returns ``(..., out)``.

    Backward: ``dx = g W``, ``dW = g^T x`` and ``db = sum(g)`` over all leading dims (the rows'
    sum as a product with a ones vector, ``backend.sum_rows``). Leading dims are flattened
    first, so each product is ONE 2-D matrix product (a stacked 3-D matmul would run one small
    product per leading index, far slower). ``dW`` is returned factored
    (``grad.accumulate.MatmulGrad``): a weight used at every step of a loop gets its T gradients summed as one
    product with an inner dimension of T * B at the end of the sweep, instead of T small ones.
    """
    xp = B.xp
    w = weight.data
    lead = tuple(x.shape[:-1])
    x2 = xp.reshape(x.data, (-1, x.shape[-1]))                      # (N, in)
    out = xp.matmul(x2, xp.matrix_transpose(w))                     # (N, out), a fresh array
    if bias is not None:
        out += bias.data                                            # in place: no second copy
    out = xp.reshape(out, lead + (w.shape[0],))                     # (..., out)
    def backward(g):
        g2 = xp.reshape(g, (-1, g.shape[-1]))                       # (N, out)
        gx = xp.reshape(xp.matmul(g2, w), x.shape) if x.requires_grad else None  # (..., in)
        gw = MatmulGrad([g2], [x2]) if weight.requires_grad else None  # (out, in) = g^T x
        gb = B.sum_rows(g2) if bias is not None else None           # (out,) sum of rows
        return gx, gw, gb
    parents = (x, weight, bias) if bias is not None else (x, weight)
    return make(out, parents, (lambda g: backward(g)[:len(parents)]), "linear")


def embedding(ids, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` ``(V, E)`` picked by the integer ``ids`` (any shape) -> ``(*ids.shape, E)``.

    Backward: the gradient rows are *added* into the rows they came from (a scatter-add), so an id
    that occurs several times gets the sum; the ``padding_idx`` row gets no gradient.
    """
    xp = B.xp
    idx = ids.data if isinstance(ids, Tensor) else B.asarray(ids, "int64")
    flat = xp.reshape(idx, (-1,))                                   # (N,)
    w = weight.data
    n_rows, dim = w.shape
    out = xp.reshape(xp.take(w, flat, axis=0), tuple(idx.shape) + (dim,))
    skip = None if padding_idx is None else padding_idx % n_rows
    def backward(g):                  # the padding row's rows are left out: it stays zero
        return (B.scatter_add(flat, xp.reshape(g, (-1, dim)), n_rows, skip=skip),)  # (V, E)
    return make(out, (weight,), backward, "embedding")


def _dropout_scale(shape, p: float, generator, like):
    """The inverted-dropout multiplier: 0 with probability ``p``, else ``1 / (1 - p)``; None when
    ``p == 0``. Shared by ``dropout`` and the attention functions, so that every path draws the
    same numbers from the same generator."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if p == 0.0:
        return None
    if p == 1.0:
        return B.zeros(shape, like=like)
    gen = generator if generator is not None else B.default_generator
    return gen.bernoulli(shape, 1.0 - p, dtype=like.dtype) / (1.0 - p)


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)`` (inverted
    dropout), so nothing changes at evaluation time. Random numbers come from ``generator`` (a
    ``grad.Generator``) or the global one."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    keep = _dropout_scale(x.shape, p, generator, x.data)
    return make(x.data * keep, (x,), lambda g: (g * keep,), "dropout")


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """Mean squared error (composed), used by the demo and the tests."""
    diff = ops.sub(input, as_tensor(target))
    sq = ops.mul(diff, diff)
    if reduction == "none":
        return sq
    return ops.sum(sq) if reduction == "sum" else ops.mean(sq)


# ============================================================================ LSTM cell
def lstm_step_reference(x_gates: Tensor, state: Tensor, w_hh: Tensor, mask=None) -> Tensor:
    """One LSTM step on the packed state written with primitive ops: the readable twin of
    ``lstm_step`` (same arguments, same result)::

        h, c = state[:, :H], state[:, H:]
        z = x_gates + h W_hh^T                   four gate blocks in PyTorch's order i, f, g, o
        c' = sigmoid(z_f) * c + sigmoid(z_i) * tanh(z_g)
        h' = sigmoid(z_o) * tanh(c')
        state' = [h' | c'], or the old state on rows whose mask is 0 (padding)
    """
    n_hidden = w_hh.shape[1]
    h, c = state[:, :n_hidden], state[:, n_hidden:]                   # (B, H) each
    z = x_gates + linear(h, w_hh)                                     # (B, 4H)
    zi, zf, zg, zo = ops.split(z, n_hidden, dim=1)                    # 4 x (B, H)
    i, f, g, o = ops.sigmoid(zi), ops.sigmoid(zf), ops.tanh(zg), ops.sigmoid(zo)
    c_new = f * c + i * g
    h_new = o * ops.tanh(c_new)
    new_state = ops.cat([h_new, c_new], dim=1)                        # (B, 2H) = [h' | c']
    if mask is None:
        return new_state
    m = mask.data if isinstance(mask, Tensor) else mask               # (B, 1) of 0/1
    return ops.where(m < 0.5, state, new_state)                       # padding keeps its state


@fused(reference=lstm_step_reference, requires=("accumulate",))
def lstm_step(x_gates: Tensor, state: Tensor, w_hh: Tensor, mask=None) -> Tensor:
    """One fused LSTM step on a packed state: a single graph node with a hand-written backward.

    ``x_gates``: ``(B, 4H)``, the input's share of the gates, ``x W_ih^T + b_ih + b_hh``
    (computed for all time steps at once by the layer); ``state``: ``(B, 2H)``, ``[h | c]``
    packed in one array so that the step is one node with one output; ``w_hh``: ``(4H, H)``.
    ``mask`` (optional, ``(B, 1)`` of 0/1): rows with 0 keep their old state (padding).
    Returns the new packed state ``(B, 2H)``.

    Backward, with ``gh``, ``gc`` the incoming gradients of ``h'`` and ``c'``::

        dc' = gc + gh * o * (1 - tanh(c')^2)
        dz_i = dc' * g * i (1 - i)        dz_f = dc' * c * f (1 - f)
        dz_g = dc' * i * (1 - g^2)        dz_o = gh * tanh(c') * o (1 - o)
        d x_gates = dz     dh = dz W_hh     dc = dc' * f     dW_hh = dz^T h

    ``dW_hh`` goes back factored (``MatmulGrad``), so the T steps' shares are summed as one
    matrix product at the end of the backward sweep.
    """
    xp = B.xp
    n_hidden = w_hh.shape[1]
    s = state.data
    h, c = s[:, :n_hidden], s[:, n_hidden:]                                   # (B, H) each
    w = w_hh.data
    z = xp.matmul(h, xp.matrix_transpose(w))                                  # (B, 4H), fresh
    z += x_gates.data
    # sigmoid(z) = (1 + tanh(z / 2)) / 2: stable for any z; i and f are adjacent blocks
    i_f = xp.tanh(0.5 * z[:, :2 * n_hidden])
    i_f *= 0.5
    i_f += 0.5
    i, f = i_f[:, :n_hidden], i_f[:, n_hidden:]                               # (B, H) each
    g = xp.tanh(z[:, 2 * n_hidden:3 * n_hidden])
    o = xp.tanh(0.5 * z[:, 3 * n_hidden:])
    o *= 0.5
    o += 0.5
    c_new = f * c
    c_new += i * g                                                            # (B, H)
    tc = xp.tanh(c_new)
    out = xp.concat([o * tc, c_new], axis=1)                                  # (B, 2H) = [h' | c']
    keep = None
    if mask is not None:
        m = mask.data if isinstance(mask, Tensor) else mask                   # (B, 1) of 0/1
        keep = m < 0.5                                                        # rows past their end
        out = xp.where(keep, s, out)

    def backward(grad_out):
        go = grad_out if keep is None else xp.where(keep, 0.0, grad_out)
        gh, gc = go[:, :n_hidden], go[:, n_hidden:]
        dc = 1.0 - tc * tc
        dc *= gh * o
        dc += gc                                                              # dL/dc'
        dz = xp.concat([dc * g * i * (1.0 - i),
                        dc * c * f * (1.0 - f),
                        dc * i * (1.0 - g * g),
                        gh * tc * o * (1.0 - o)], axis=1)                     # (B, 4H)
        dh = xp.matmul(dz, w)                                                 # (B, H)
        dstate = xp.concat([dh, dc * f], axis=1)                              # (B, 2H)
        if keep is not None:
            dstate = xp.where(keep, grad_out, dstate)                         # kept rows pass through
        dw = MatmulGrad([dz], [h]) if w_hh.requires_grad else None  # (4H, H) = dz^T h, factored
        return dz, dstate, dw
    return make(out, (x_gates, state, w_hh), backward, "lstm_step")


# ============================================================================ LSTM layer
def lstm_layer_reference(x_gates: Tensor, state: Tensor, w_hh: Tensor, masks=None,
                         reverse: bool = False) -> Tensor:
    """A whole LSTM layer over time as a loop of ``lstm_step`` nodes, one per step: the readable
    twin of ``lstm_layer`` (same arguments, same result).

    ``x_gates``: ``(T, B, 4H)``, the input's share of the gates for every step; ``state``:
    ``(B, 2H)``, the initial ``[h | c]``; ``w_hh``: ``(4H, H)``; ``masks`` (optional,
    ``(T, B, 1)`` of 0/1): rows with 0 at step t keep their state there (padding);
    ``reverse``: run from step T-1 down to 0. Returns ``(2, T, B, H)``: ``[0]`` the hidden
    states ``h_t`` (the layer's outputs), ``[1]`` the cell states ``c_t``; the final state is
    step T-1's (step 0's with ``reverse``).
    """
    n_steps, batch, n = x_gates.shape[0], x_gates.shape[1], w_hh.shape[1]
    m = masks.data if isinstance(masks, Tensor) else masks                    # (T, B, 1) or None
    states = [None] * n_steps
    for t in (range(n_steps - 1, -1, -1) if reverse else range(n_steps)):
        state = lstm_step(x_gates[t], state, w_hh, None if m is None else m[t, ...])  # (B, 2H)
        states[t] = state
    packed = ops.stack(states, dim=0).reshape(n_steps, batch, 2, n)           # (T, B, 2, H)
    return ops.permute(packed, (2, 0, 1, 3))                                  # (2, T, B, H)


@fused(reference=lstm_layer_reference)
def lstm_layer(x_gates: Tensor, state: Tensor, w_hh: Tensor, masks=None,
               reverse: bool = False) -> Tensor:
    """A whole LSTM layer over time in ONE graph node (same arguments and result as
    ``lstm_layer_reference``): the math of ``lstm_step`` at every step, each value computed by
    the same operations in the same order, so the results are the same to the last bit.

    Forward: one loop over time. Each step's ``h W_hh^T + x_gates[t]`` is made in one ``(B, 4H)``
    buffer; its first elementwise pass writes each gate into a *gate-major* buffer ``acts``
    ``(T, 4, B, H)`` (i, f, g, o, each a contiguous ``(B, H)`` block: NumPy runs several times
    faster on contiguous arrays than on the column blocks of a ``(B, 4H)`` row), where the rest
    of the step works in place; ``tanh(c_t)`` is kept in ``tcs`` ``(T, B, H)`` and the result
    ``hc`` ``(2, T, B, H)`` is written step by step (``backend.into``: ``out=`` where the
    library has it).

    Backward: one loop back over time. ``dz`` ``(T, B, 4H)`` is filled step by step and IS the
    gradient of ``x_gates`` (no per-step slices to gather); each gate's product is made in
    contiguous scratch buffers and only its last factor writes into ``dz``'s column block; the
    state's gradient is carried in two ``(B, H)`` buffers; ``dW_hh`` is ONE matrix product over
    all steps at the end, ``dz^T [h_prev]``, with the rows in the order the per-step nodes'
    backward would send them (the last step first, for the forward direction), so that it too
    is the same to the bit. Per step, with ``gh``, ``gc`` the gradients of ``h_t``, ``c_t``
    (from outside plus from step t+1)::

        dc = gc + gh * o * (1 - tanh(c_t)^2)
        dz_i = dc * g * i (1 - i)     dz_f = dc * c_prev * f (1 - f)
        dz_g = dc * i * (1 - g^2)     dz_o = gh * tanh(c_t) * o (1 - o)
        d h_prev = dz W_hh            d c_prev = dc * f

    With ``masks``, a row kept at step t (mask 0) passes its gradient through unchanged and
    sends none to the gates, as in ``lstm_step``.
    """
    xp = B.xp
    n_steps, batch = x_gates.shape[0], x_gates.shape[1]
    n = w_hh.shape[1]                                                          # H
    xg, s0, w = x_gates.data, state.data, w_hh.data
    # W_hh^T copied once into its own contiguous array when there are several steps: the T
    # products h W_hh^T then run as plain (not transposed) ones, faster for small B, with the
    # same values; for one step (generation) the copy would cost more than it saves
    wt = xp.matrix_transpose(w)                                                # (H, 4H)
    if n_steps > 1:
        wt = xp.asarray(wt, copy=True)
    hc = B.empty((2, n_steps, batch, n), like=xg)                              # (2, T, B, H) h, c
    acts = B.empty((n_steps, 4, batch, n), like=xg)                            # (T, 4, B, H) i f g o
    tcs = B.empty((n_steps, batch, n), like=xg)                                # (T, B, H) tanh(c)
    z = B.empty((batch, 4 * n), like=xg)                                       # (B, 4H) one step's
    scratch = B.empty((batch, n), like=xg)                                     # (B, H)
    h0, c0 = s0[:, :n], s0[:, n:]                                              # (B, H) each
    keep = None
    if masks is not None:
        m = masks.data if isinstance(masks, Tensor) else masks                 # (T, B, 1) of 0/1
        keep = m < 0.5                                                         # rows past their end
    order = range(n_steps - 1, -1, -1) if reverse else range(n_steps)
    first = n_steps - 1 if reverse else 0

    def previous(t):
        """``(h, c)`` that step ``t`` starts from: the step before it in ``order``, or ``state``."""
        if t == first:
            return h0, c0
        p = t + 1 if reverse else t - 1
        return hc[0, p, ...], hc[1, p, ...]                                    # (B, H) each

    for t in order:
        h_prev, c_prev = previous(t)
        B.into(z, xp.matmul, h_prev, wt)                                       # (B, 4H) h W_hh^T
        z += xg[t, ...]
        z_gates = xp.permute_dims(xp.reshape(z, (batch, 4, n)), (1, 0, 2))     # (4, B, H), read only
        a = acts[t, ...]                                                       # (4, B, H)
        # sigmoid(v) = (1 + tanh(v / 2)) / 2 for i, f (adjacent blocks) and o; tanh for g
        for block in (slice(0, 2), slice(3, 4)):
            sig = B.into(a[block, ...], xp.multiply, 0.5, z_gates[block, ...])
            B.into(sig, xp.tanh, sig)
            sig *= 0.5
            sig += 0.5
        i, f, o = a[0, ...], a[1, ...], a[3, ...]
        g = B.into(a[2, ...], xp.tanh, z_gates[2, ...])
        c = B.into(hc[1, t, ...], xp.multiply, f, c_prev)                      # f * c_prev
        c += B.into(scratch, xp.multiply, i, g)                                # + i * g
        tc = B.into(tcs[t, ...], xp.tanh, c)                                   # (B, H)
        B.into(hc[0, t, ...], xp.multiply, o, tc)                              # h_t = o tanh(c_t)
        if keep is not None:                                                   # padding keeps its state
            hc[0, t, ...] = xp.where(keep[t, ...], h_prev, hc[0, t, ...])
            hc[1, t, ...] = xp.where(keep[t, ...], c_prev, hc[1, t, ...])

    def backward(grad_hc):                                                     # (2, T, B, H)
        dz = B.empty((n_steps, batch, 4 * n), like=xg)                         # (T, B, 4H) = d x_gates
        gh_all, gc_all = B.empty((batch, n), like=xg), B.empty((batch, n), like=xg)
        dc, s1, s2 = (B.empty((batch, n), like=xg) for _ in range(3))         # (B, H) scratch
        dh = dcp = None                   # d h_prev, d c_prev: sent back by step t+1 to step t
        for t in reversed(order):
            gh_in, gc_in = grad_hc[0, t, ...], grad_hc[1, t, ...]              # (B, H) from outside
            if dh is not None:
                gh_in = B.into(gh_all, xp.add, gh_in, dh)
                gc_in = B.into(gc_all, xp.add, gc_in, dcp)
            gh, gc = gh_in, gc_in
            if keep is not None:
                gh, gc = xp.where(keep[t, ...], 0.0, gh_in), xp.where(keep[t, ...], 0.0, gc_in)
            a = acts[t, ...]
            i, f, g, o = a[0, ...], a[1, ...], a[2, ...], a[3, ...]
            tc, (_, c_prev) = tcs[t, ...], previous(t)
            B.into(dc, xp.multiply, tc, tc)
            B.into(dc, xp.subtract, 1.0, dc)                                   # 1 - tanh(c)^2
            dc *= B.into(s1, xp.multiply, gh, o)
            dc += gc                                                           # dL/dc_t
            d = dz[t, ...]                                                     # (B, 4H)
            B.into(s1, xp.multiply, dc, g)
            s1 *= i
            B.into(d[:, :n], xp.multiply, s1, B.into(s2, xp.subtract, 1.0, i))           # dz_i
            B.into(s1, xp.multiply, dc, c_prev)
            s1 *= f
            B.into(d[:, n:2 * n], xp.multiply, s1, B.into(s2, xp.subtract, 1.0, f))     # dz_f
            B.into(s1, xp.multiply, dc, i)
            B.into(s2, xp.multiply, g, g)
            B.into(d[:, 2 * n:3 * n], xp.multiply, s1, B.into(s2, xp.subtract, 1.0, s2))  # dz_g
            B.into(s1, xp.multiply, gh, tc)
            s1 *= o
            B.into(d[:, 3 * n:], xp.multiply, s1, B.into(s2, xp.subtract, 1.0, o))       # dz_o
            if t == first and not state.requires_grad:
                break                                                          # nothing to send back
            if dh is None:
                dh, dcp = B.empty((batch, n), like=xg), B.empty((batch, n), like=xg)
            B.into(dh, xp.matmul, dz[t, ...], w)                               # d h_prev = dz W_hh
            B.into(dcp, xp.multiply, dc, f)                                    # d c_prev = dc * f
            if keep is not None:                                               # kept rows pass through
                dh[...] = xp.where(keep[t, ...], gh_in, dh)
                dcp[...] = xp.where(keep[t, ...], gc_in, dcp)
        dw = None
        if w_hh.requires_grad:        # one product over all steps, rows in the per-step order
            h_start = xp.expand_dims(h0, axis=0)                               # (1, B, H)
            if reverse:               # steps 0, 1, ..., T-1, each after step t+1 (or the start)
                left = dz
                right = xp.concat([hc[0, 1:, ...], h_start], axis=0)
            else:                     # steps T-1, ..., 0, each after step t-1 (or the start)
                left = xp.flip(dz, axis=0)
                right = xp.concat([xp.flip(hc[0, :n_steps - 1, ...], axis=0), h_start], axis=0)
            left = xp.reshape(left, (n_steps * batch, 4 * n))                  # (T*B, 4H)
            right = xp.reshape(right, (n_steps * batch, n))                    # (T*B, H)
            dw = xp.matmul(xp.matrix_transpose(left), right)                   # (4H, H)
        d_state = xp.concat([dh, dcp], axis=1) if state.requires_grad else None  # (B, 2H)
        return dz, d_state, dw
    return make(hc, (x_gates, state, w_hh), backward, "lstm_layer")


def lstm_cell_reference(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
                        b_ih: Tensor | None = None, b_hh: Tensor | None = None):
    """One LSTM step written with primitive ops: the readable twin of ``lstm_cell``.

    ``x``: ``(B, in)``; ``h``, ``c``: ``(B, H)``; ``w_ih``: ``(4H, in)``; ``w_hh``: ``(4H, H)``;
    gate blocks in PyTorch's order i, f, g, o::

        i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_g)   o = sigmoid(z_o)
        c' = f * c + i * g
        h' = o * tanh(c')

    Returns ``(h', c')``. Autograd differentiates it op by op.
    """
    z = linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh)               # (B, 4H)
    zi, zf, zg, zo = ops.split(z, h.shape[-1], dim=1)                 # 4 x (B, H)
    i, f, g, o = ops.sigmoid(zi), ops.sigmoid(zf), ops.tanh(zg), ops.sigmoid(zo)
    c_new = f * c + i * g
    h_new = o * ops.tanh(c_new)
    return h_new, c_new


@fused(reference=lstm_cell_reference)
def lstm_cell(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
              b_ih: Tensor | None = None, b_hh: Tensor | None = None):
    """One LSTM step on the fused path (same math and signature as ``lstm_cell_reference``):
    the input projection, then ``lstm_step``. Returns ``(h', c')``."""
    n_hidden = w_hh.shape[1]
    x_gates = linear(x, w_ih, b_ih)
    if b_hh is not None:
        x_gates = x_gates + b_hh
    state = lstm_step(x_gates, ops.cat([h, c], dim=1), w_hh)
    return state[:, :n_hidden], state[:, n_hidden:]


# ============================================================================ attention
def attention_arrays(q, mem, pad_mask=None):
    """The forward of ``attention_lookup`` on plain arrays (no graph node): ``q`` ``(B, H)``,
    ``mem`` ``(B, S, H)``, ``pad_mask`` ``(B, S)`` bool or None -> ``(a (B, S), context (B, H))``.
    Shared by the fused node and the inference decoder step
    (``minis2s.models.decoder.decoder_step``)."""
    xp = B.xp
    scores = xp.matmul(mem, q[:, :, None])[:, :, 0]                          # (B, S)
    if pad_mask is not None:
        scores = xp.where(pad_mask, B.full((), float("-inf"), like=scores), scores)
    z = xp.exp(scores - xp.max(scores, axis=1, keepdims=True))
    a = z / xp.sum(z, axis=1, keepdims=True)                                  # (B, S)
    context = xp.matmul(a[:, None, :], mem)[:, 0, :]                          # (B, H)
    return a, context


def attention_lookup_reference(query: Tensor, memory: Tensor, pad_mask=None):
    """Dot-product attention for one decoder step, written with ops: the readable twin of
    ``attention_lookup`` (same arguments, same results)::

        scores  = bmm(q, memory^T)      (B, 1, S)   how well the query matches each source vector
        scores  = -inf at padding                   so that padding gets exactly zero weight
        a       = softmax(scores)       (B, 1, S)   the attention weights, summing to 1
        context = bmm(a, memory)        (B, 1, H)   the weighted sum of the source vectors
    """
    batch, n_hidden = query.shape
    scores = ops.bmm(ops.reshape(query, (batch, 1, n_hidden)),
                     ops.transpose(memory, 1, 2))                      # (B, 1, S)
    if pad_mask is not None:
        scores = ops.masked_fill(scores, pad_mask[:, None, :], float("-inf"))
    weights = softmax(scores, dim=-1)                                  # (B, 1, S)
    context = ops.reshape(ops.bmm(weights, memory), (batch, n_hidden))  # (B, H)
    return context, Tensor(B.xp.reshape(weights.data, (batch, memory.shape[1])))  # no gradient


@fused(reference=attention_lookup_reference, requires=("accumulate",))
def attention_lookup(query: Tensor, memory: Tensor, pad_mask=None):
    """Dot-product attention for one decoder step, fused into one node.

    ``query``: ``(B, H)``; ``memory``: ``(B, S, H)`` (keys and values); ``pad_mask``: ``(B, S)``
    bool, True where the source is padding. Returns ``(context (B, H), weights (B, S))``; the
    weights are returned without gradient (they are for looking at). Same math as
    ``attention_lookup_reference``::

        scores = memory q          a = softmax(scores) (0 at padding)        context = a^T memory

    Backward, with ``gc`` the gradient of the context::

        ga = memory gc             gs = a * (ga - sum(a * ga))      (softmax's Jacobian)
        dq = gs^T memory           dmemory = a (x) gc + gs (x) q     (two outer products per row)

    ``dmemory`` is returned as a ``grad.accumulate.OuterGrad``: the decoder's T steps add up to ONE batched
    matrix product instead of T products with an inner dimension of 1.
    """
    xp = B.xp
    q, mem = query.data, memory.data
    a, context = attention_arrays(q, mem, pad_mask)                           # (B, S), (B, H)

    def backward(gc):
        ga = xp.matmul(mem, gc[:, :, None])[:, :, 0]                          # (B, S)
        gs = a * (ga - xp.sum(a * ga, axis=1, keepdims=True))                 # (B, S)
        dq = xp.matmul(gs[:, None, :], mem)[:, 0, :]                          # (B, H)
        return dq, OuterGrad([a, gs], [gc, q])
    return make(context, (query, memory), backward, "attention_lookup"), Tensor(a)


# ============================================================================ activations
def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit, ``x * Phi(x)`` with ``Phi`` the standard normal CDF (PyTorch's
    ``gelu``): ``0.5 x (1 + erf(x / sqrt(2)))``, or with ``approximate="tanh"`` the tanh form
    ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``. Composed from ops (autograd gives
    ``d gelu = Phi(x) + x phi(x)``)."""
    if approximate == "none":
        return x * 0.5 * (ops.erf(x * (1.0 / math.sqrt(2.0))) + 1.0)
    if approximate == "tanh":
        inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
        return x * 0.5 * (ops.tanh(inner) + 1.0)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# ======================================================================== layer normalisation
def _normalized_shape(x: Tensor, normalized_shape, weight, bias) -> tuple:
    """``normalized_shape`` as a tuple, checked against the trailing dims of ``x`` and the shapes
    of ``weight`` and ``bias``."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or x.shape[x.ndim - len(shape):] != shape or len(shape) > x.ndim:
        raise ValueError(f"layer_norm: normalized_shape {shape} must be the last dims of the "
                         f"input, got input of shape {x.shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != shape:
            raise ValueError(f"layer_norm: {name} must have shape {shape}, got {t.shape}")
    return shape


def layer_norm_reference(x: Tensor, normalized_shape, weight: Tensor | None = None,
                         bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation written with primitive ops: the readable twin of ``layer_norm``.

    Over the last ``len(normalized_shape)`` dims of ``x`` (``(..., *normalized_shape)``)::

        mean = mean(x)      var = mean((x - mean)^2)   (the biased variance, as PyTorch)
        y = (x - mean) / sqrt(var + eps) * weight + bias
    """
    shape = _normalized_shape(x, normalized_shape, weight, bias)
    dims = tuple(range(x.ndim - len(shape), x.ndim))
    centred = x - ops.mean(x, dims, keepdim=True)                       # (..., *shape)
    var = ops.mean(centred * centred, dims, keepdim=True)               # (..., 1, ..., 1)
    y = centred / ops.sqrt(var + eps)                                   # x-hat
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


@fused(reference=layer_norm_reference)
def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation in one node (PyTorch's ``layer_norm``); same math as
    ``layer_norm_reference``, which runs instead under ``grad.reference_mode()``.

    ``x``: ``(..., *normalized_shape)``; ``weight``, ``bias``: ``normalized_shape`` or None.
    With ``N`` the number of normalised elements, ``r = 1 / sqrt(var + eps)`` and
    ``x_hat = (x - mean) r``, the backward (docs/derivations.md derives it) is::

        g_hat = g * weight
        dx = r * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat))
        dweight = sum over the leading dims of g * x_hat         dbias = sum of g

    (those two sums over the rows by ``backend.sum_rows``, a product with a ones vector).

    Computed on ``x`` seen as rows ``(M, N)``. Every mean along a row is a dot product of the
    row with a vector (``backend.row_dot``: no product array, faster than a reduction), and the
    backward's two means need no temporary: ``mean(g_hat) = g . (weight / N)`` and
    ``mean(g_hat * x_hat) = (g * x_hat) . (weight / N)``, where ``g * x_hat`` is also the sum
    that gives ``dweight``. Temporaries the node made itself are updated in place.
    """
    xp = B.xp
    shape = _normalized_shape(x, normalized_shape, weight, bias)
    n = math.prod(shape)
    x2 = xp.reshape(x.data, (-1, n))                                    # (M, N) rows
    avg = B.full((n,), 1.0 / n, like=x2)                                # (N,)

    def row_mean(a, v):                                                 # (M, 1): rows of a . v
        return xp.reshape(B.row_dot(a, v), (-1, 1))
    x_hat = x2 - row_mean(x2, avg)                                      # centred, a new array
    r = 1.0 / xp.sqrt(row_mean(x_hat, x_hat) / n + eps)                 # (M, 1)
    x_hat *= r                                                          # (M, N) x-hat
    y = x_hat                                                           # kept for backward
    if weight is not None:
        y = x_hat * xp.reshape(weight.data, (n,))                       # a new array
    if bias is not None:
        if y is x_hat:
            y = x_hat + xp.reshape(bias.data, (n,))
        else:
            y += xp.reshape(bias.data, (n,))                            # in place: ours
    y = xp.reshape(y, x.shape)

    def backward(g):
        g2 = xp.reshape(g, (-1, n))                                     # (M, N)
        w = None if weight is None else xp.reshape(weight.data, (n,))
        gx = g2 * x_hat                                                 # (M, N) g * x_hat
        dx = dw = db = None
        if x.requires_grad:
            if w is None:
                w_n = avg                                               # (N,) 1 / N
                dx = g2 - row_mean(g2, w_n)                             # g_hat - mean(g_hat)
            else:
                w_n = w / n                                             # (N,) weight / N
                dx = g2 * w                                             # g_hat, a new array
                dx -= row_mean(g2, w_n)                                 # - mean(g_hat)
            dx -= x_hat * row_mean(gx, w_n)                             # - x_hat mean(g_hat x_hat)
            dx *= r
            dx = xp.reshape(dx, x.shape)
        if weight is not None and weight.requires_grad:
            dw = xp.reshape(B.sum_rows(gx), shape)                      # (*shape)
        if bias is not None and bias.requires_grad:
            db = xp.reshape(B.sum_rows(g2), shape)                      # (*shape)
        return tuple(d for d, t in ((dx, x), (dw, weight), (db, bias)) if t is not None)
    parents = tuple(t for t in (x, weight, bias) if t is not None)
    return make(y, parents, backward, "layer_norm")


# ============================================================== scaled dot-product attention
def _attention_inputs(query: Tensor, key: Tensor, value: Tensor, attn_mask, is_causal, scale):
    """Check the shapes and turn the mask into ``(allowed, additive, scale)``: ``allowed`` a bool
    array (True where a query may attend) or None, ``additive`` a float Tensor added to the scores
    or None, both broadcastable to the scores' shape ``(..., T, S)``."""
    xp = B.xp
    if query.ndim < 2 or key.ndim != query.ndim or value.ndim != query.ndim \
            or query.shape[:-2] != key.shape[:-2] or key.shape[:-2] != value.shape[:-2]:
        raise ValueError("scaled_dot_product_attention: query, key and value must be (..., T, d), "
                         "(..., S, d) and (..., S, dv) with the same leading dims, got "
                         f"{query.shape}, {key.shape} and {value.shape}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: query {query.shape} and key {key.shape} "
                         f"need the same last dim, key and value {value.shape} the same length")
    n_q, n_k = query.shape[-2], key.shape[-2]
    scores_shape = query.shape[:-1] + (n_k,)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal=True, "
                             "not both")
        steps = B.arange(max(n_q, n_k), like=query.data)
        return steps[None, :n_k] <= steps[:n_q, None], None, scale      # (T, S) lower triangle
    if attn_mask is None:
        return None, None, scale
    mask = attn_mask if isinstance(attn_mask, Tensor) else Tensor(B.asarray(attn_mask))
    shape = mask.shape
    if len(shape) > len(scores_shape) or any(
            m not in (1, s) for m, s in zip(shape[::-1], scores_shape[::-1])):
        raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {shape} does not "
                         f"broadcast to the scores' shape {scores_shape}")
    if mask.dtype == xp.bool:
        return mask.data, None, scale
    if not B.is_floating(mask.dtype):
        raise TypeError("scaled_dot_product_attention: attn_mask must be bool (True = may attend) "
                        f"or floating (added to the scores), got {mask.dtype}")
    return None, (mask if mask.dtype == query.dtype else ops.astype(mask, query.dtype)), scale


def _row_shift(scores):
    """Each row's maximum (the softmax's shift), 0 on rows where every score is -inf, and those
    rows as a 0/1 array: fully masked rows get zero weights (``sum(exp) + 1`` in the divisor)."""
    xp = B.xp
    top = xp.max(scores, axis=-1, keepdims=True)                         # (..., T, 1)
    dead = top == -math.inf
    return xp.where(dead, B.full((), 0.0, like=top), top), xp.astype(dead, scores.dtype)


def scaled_dot_product_attention_reference(query: Tensor, key: Tensor, value: Tensor,
                                           attn_mask=None, dropout_p: float = 0.0,
                                           is_causal: bool = False, scale: float | None = None,
                                           *, generator=None, need_weights: bool = False):
    """Attention written with primitive ops: the readable twin of
    ``scaled_dot_product_attention`` (same arguments, same result)::

        scores = query key^T * scale (+ float mask)          (..., T, S)
        scores = -inf where the bool mask is False
        weights = softmax(scores) (0 on rows with no allowed key), then dropout
        output = weights value                               (..., T, dv)
    """
    allowed, additive, scale = _attention_inputs(query, key, value, attn_mask, is_causal, scale)
    scores = ops.matmul(query, ops.transpose(key, -2, -1)) * scale      # (..., T, S)
    if additive is not None:
        scores = scores + additive
    if allowed is not None:
        scores = ops.where(allowed, scores, -math.inf)
    shift, dead = _row_shift(scores.data)           # a constant: softmax does not depend on it
    e = ops.exp(scores - Tensor(shift))                                  # 0 where masked
    weights = e / (ops.sum(e, -1, keepdim=True) + Tensor(dead))         # (..., T, S)
    weights = dropout(weights, dropout_p, True, generator)
    output = ops.matmul(weights, value)                                  # (..., T, dv)
    return (output, weights) if need_weights else output


@fused(reference=scaled_dot_product_attention_reference)
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask=None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None, *, generator=None,
                                 need_weights: bool = False):
    """``softmax(query key^T * scale + mask) value`` in one node, PyTorch's
    ``scaled_dot_product_attention`` (``scaled_dot_product_attention_reference`` runs instead
    under ``grad.reference_mode()``).

    * ``query`` ``(..., T, d)``, ``key`` ``(..., S, d)``, ``value`` ``(..., S, dv)`` with the same
      leading dims (e.g. ``(B, heads)``); returns ``(..., T, dv)``.
    * ``attn_mask`` (broadcastable to ``(..., T, S)``), PyTorch's convention for this function: a
      bool mask is True where a query MAY attend to a key; a float mask is added to the scores
      (``-inf`` masks; it receives a gradient if it requires one). ``is_causal=True`` lets query
      ``i`` attend to keys ``j <= i`` (no ``attn_mask`` then). ``scale`` defaults to
      ``1 / sqrt(d)``.
    * ``dropout_p`` drops attention weights (always, as PyTorch's function does: pass 0 at
      evaluation), with random numbers from ``generator`` or the global one.
    * Fully masked rows (a query with no key it may attend to): zero weights and zero output, and
      no gradient through them (PyTorch's modules give NaN there).
    * ``need_weights=True`` (not in PyTorch's function) returns ``(output, weights)``, the weights
      ``(..., T, S)`` after dropout, with gradient: ``grad.nn.MultiheadAttention`` uses it.

    Backward (derived in docs/derivations.md), with ``P`` the weights before dropout, ``D`` the
    dropout multiplier and ``Pd = P * D``::

        dPd = dout value^T (+ dweights)          dvalue = Pd^T dout
        dS = P * (dPd * D - sum(P * dPd * D))    (the softmax Jacobian, row by row)
        dquery = dS key * scale                  dkey = dS^T query * scale      dmask = dS
    """
    xp = B.xp
    allowed, additive, scale = _attention_inputs(query, key, value, attn_mask, is_causal, scale)
    q, k, v = query.data, key.data, value.data
    # (..., T, S) arrays made here are this node's own, so they are updated in place; the bool
    # mask is applied as an added 0 / -inf (on the mask's small shape, then one in-place add)
    out, p, drop, pd = _attend(q, k, v, allowed, additive, scale, dropout_p, generator)
    n_out = out.shape[-1]
    if need_weights:
        out = xp.concat([out, pd], axis=-1)                              # (..., T, dv + S) packed

    def backward(g):
        g_out = g[..., :n_out] if need_weights else g                    # (..., T, dv)
        dq, dk, dv, d_mask = _attend_backward(
            g_out, g[..., n_out:] if need_weights else None, q, k, v, p, drop, pd, scale,
            (query.requires_grad, key.requires_grad, value.requires_grad),
            additive.shape if additive is not None and additive.requires_grad else None)
        grads = (dq, dk, dv)
        if additive is not None:
            grads += (d_mask,)
        return grads
    parents = (query, key, value) if additive is None else (query, key, value, additive)
    node = make(out, parents, backward, "scaled_dot_product_attention")
    if need_weights:
        return node[..., :n_out], node[..., n_out:]
    return node


def _attend(q, k, v, allowed, additive, scale, dropout_p, generator, out=None):
    """The forward arithmetic of the fused attention on arrays: ``q`` ``(..., T, d)``, ``k``
    ``(..., S, d)``, ``v`` ``(..., S, dv)`` (views are fine). Returns ``(out (..., T, dv),
    p (..., T, S) weights, drop (the dropout multiplier or None), pd = p * drop)``. The
    ``(..., T, S)`` arrays made here are its own, so they are updated in place; a bool mask is
    added as 0 / -inf (built on the mask's small shape). ``out``, if given, is an array (or a
    strided view of one) that the output product is written into."""
    xp = B.xp
    scores = xp.matmul(q, xp.matrix_transpose(k))                        # (..., T, S), fresh
    scores *= scale
    if additive is not None:
        scores += additive.data
    if allowed is not None:
        scores += xp.where(allowed, B.full((), 0.0, like=scores), B.full((), -math.inf, like=scores))
    shift, dead = _row_shift(scores)
    scores -= shift
    p = B.exp_(scores)                                                   # 0 where masked
    p /= xp.sum(p, axis=-1, keepdims=True) + dead                        # (..., T, S) weights
    drop = _dropout_scale(p.shape, dropout_p, generator, p)
    pd = p if drop is None else p * drop
    return _product(pd, v, out), p, drop, pd                             # (..., T, dv)


def _product(a, b, out=None):
    """``a @ b``: a new array, or written into ``out`` (an array or a strided view) if given."""
    return B.xp.matmul(a, b) if out is None else B.into(out, B.xp.matmul, a, b)


def _attend_backward(g_out, g_weights, q, k, v, p, drop, pd, scale, needs, mask_shape,
                     outs=(None, None, None)):
    """The backward of ``_attend``: ``(dq, dk, dv, d_mask)`` from the output's gradient ``g_out``
    ``(..., T, dv)`` and the weights' own (``g_weights``, or None). ``needs`` says which of q, k,
    v want a gradient (None for the others); ``d_mask`` (the gradient of an added float mask,
    summed to ``mask_shape``) is None unless ``mask_shape`` is given. ``outs``: for each of dq,
    dk, dv an array (or strided view) to write the product into, or None for a new array."""
    xp = B.xp
    d_pd = xp.matmul(g_out, xp.matrix_transpose(v))                      # (..., T, S), fresh
    if g_weights is not None:
        d_pd = d_pd + g_weights                                          # the weights' own gradient
    dv = _product(xp.matrix_transpose(pd), g_out, outs[2]) if needs[2] else None
    ds = d_pd                                                            # ours: in place
    if drop is not None:
        ds *= drop                                                       # dP
    ds -= xp.sum(p * ds, axis=-1, keepdims=True)
    ds *= p                                                              # softmax Jacobian: dS
    d_mask = None
    if mask_shape is not None:
        d_mask = ops._unbroadcast(ds, mask_shape)
        d_mask = xp.asarray(d_mask, copy=True) if d_mask is ds else d_mask
    ds *= scale                                                          # for both products
    dq = _product(ds, k, outs[0]) if needs[0] else None                  # (..., T, d)
    dk = _product(xp.matrix_transpose(ds), q, outs[1]) if needs[1] else None  # (..., S, d)
    return dq, dk, dv, d_mask


# ================================================ multi-head attention on packed projections
def _packed_width(query: Tensor, key_value, num_heads: int) -> int:
    """``E`` of ``multi_head_attention``'s packed inputs, checked."""
    if query.ndim != 3 or (key_value is not None and (key_value.ndim != 3
                                                      or key_value.shape[0] != query.shape[0])):
        raise ValueError("multi_head_attention: query must be (B, T, 3E) (or (B, T, E) with "
                         "key_value (B, S, 2E)), got "
                         f"{query.shape} and {None if key_value is None else key_value.shape}")
    e = query.shape[-1] // 3 if key_value is None else query.shape[-1]
    if (key_value is None and 3 * e != query.shape[-1]) or \
            (key_value is not None and key_value.shape[-1] != 2 * e) or e % num_heads:
        raise ValueError(f"multi_head_attention: widths {query.shape[-1]} and "
                         f"{None if key_value is None else key_value.shape[-1]} are not 3E (or E "
                         f"and 2E) with E a multiple of num_heads={num_heads}")
    return e


def _split_heads(a, num_heads: int):
    """``(B, L, E)`` -> ``(B, h, L, E/h)``, a view where the library can make one."""
    xp = B.xp
    n, length, e = a.shape
    return xp.permute_dims(xp.reshape(a, (n, length, num_heads, e // num_heads)), (0, 2, 1, 3))


def _merge_heads(*parts):
    """``(B, h, L, d)`` arrays -> ``(B, L, len(parts) * h * d)``, the parts side by side: one
    copy, in the layout of the packed projection they came from."""
    xp = B.xp
    n, h, length, d = parts[0].shape
    moved = [xp.permute_dims(a, (0, 2, 1, 3)) for a in parts]            # (B, L, h, d) views
    both = moved[0] if len(moved) == 1 else xp.concat(moved, axis=2)     # (B, L, m h, d)
    return xp.reshape(both, (n, length, len(parts) * h * d))


def _packed_heads(like, n: int, length: int, parts: int, num_heads: int, e: int):
    """A new array ``(B, L, parts * E)`` (dtype of ``like``) and, for each of its ``parts``
    blocks of width ``E``, that block's heads as a strided view ``(B, h, L, E/h)``. A product
    written into the views (``out=``) lands in the packed layout directly: the heads are merged
    with no copy."""
    buffer = B.empty((n, length, parts * e), like=like)                  # (B, L, parts E)
    return buffer, [_split_heads(buffer[..., i * e:(i + 1) * e], num_heads) for i in range(parts)]


def multi_head_attention_reference(query: Tensor, key_value: Tensor | None, num_heads: int,
                                   attn_mask=None, dropout_p: float = 0.0, *, generator=None):
    """Multi-head attention on the packed projections ``grad.nn.MultiheadAttention`` computes
    with one product, written with ops: the readable twin of ``multi_head_attention``::

        q | k | v = query                    (B, T, 3E) split in three (self-attention), or
        q = query, k | v = key_value         (B, T, E) and (B, S, 2E)   (cross-attention)
        each (B, L, E) -> (B, L, h, E/h) -> (B, h, L, E/h)                 split the heads
        out = scaled_dot_product_attention(q, k, v, attn_mask, dropout_p)   (B, h, T, E/h)
        out -> (B, T, h, E/h) -> (B, T, E)                                  merge the heads
    """
    e = _packed_width(query, key_value, num_heads)
    if key_value is None:
        q, k, v = ops.split(query, e, dim=-1)                            # (B, T, E) each
    else:
        q, (k, v) = query, ops.split(key_value, e, dim=-1)

    def heads(t):                                                        # (B, L, E) -> (B, h, L, d)
        return ops.permute(ops.reshape(t, (t.shape[0], t.shape[1], num_heads, e // num_heads)),
                           (0, 2, 1, 3))
    out = scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=attn_mask,
                                       dropout_p=dropout_p, generator=generator)  # (B, h, T, d)
    return ops.reshape(ops.permute(out, (0, 2, 1, 3)), (query.shape[0], query.shape[1], e))


@fused(reference=multi_head_attention_reference)
def multi_head_attention(query: Tensor, key_value: Tensor | None, num_heads: int,
                         attn_mask=None, dropout_p: float = 0.0, *, generator=None) -> Tensor:
    """``multi_head_attention_reference`` in one node: the heads are strided views of the
    packed projections (no split, no copy), the attention is ``_attend``, and the result comes
    back with its heads merged, ``(B, T, E)``.

    * ``query`` ``(B, T, 3E)``: the queries, keys and values side by side (self-attention,
      ``key_value=None``); or ``query`` ``(B, T, E)`` and ``key_value`` ``(B, S, 2E)`` (keys and
      values side by side: cross-attention). ``E`` must be a multiple of ``num_heads``.
    * ``attn_mask``: as ``scaled_dot_product_attention`` (bool True = may attend, or float
      added), broadcastable to ``(B, h, T, S)``. The scale is ``1 / sqrt(E / h)``.

    The output heads ``(B, h, T, d)`` are written by their product straight into strided views
    of the result ``(B, T, E)`` (``_packed_heads``), so merging them costs no copy. Backward:
    ``_attend_backward`` writes the gradients of the heads the same way, side by side into ONE
    array shaped like the packed input, so the projection's gradient needs no slicing, no sum of
    three sparse parts and no copy (a concatenation of the permuted heads, ``_merge_heads``, took
    about 8x as long as the three products themselves at the benchmark's sizes).
    """
    e = _packed_width(query, key_value, num_heads)
    packed = key_value is None
    qd = query.data
    kvd = qd[..., e:] if packed else key_value.data                       # (B, S, 2E)
    q, k, v = (_split_heads(a, num_heads) for a in (qd[..., :e], kvd[..., :e], kvd[..., e:]))
    allowed, additive, scale = _attention_inputs(Tensor(q), Tensor(k), Tensor(v), attn_mask,
                                                 False, None)
    n, t_len, s_len = qd.shape[0], qd.shape[1], kvd.shape[1]
    merged, (out_heads,) = _packed_heads(qd, n, t_len, 1, num_heads, e)  # (B, T, E), (B, h, T, d)
    _, p, drop, pd = _attend(q, k, v, allowed, additive, scale, dropout_p, generator, out_heads)
    kv_grad = query.requires_grad if packed else key_value.requires_grad

    def backward(g):
        mask_shape = additive.shape if additive is not None and additive.requires_grad else None
        if packed:                                                       # dq | dk | dv (B, T, 3E)
            g_query, outs = _packed_heads(g, n, t_len, 3, num_heads, e)
            g_kv = None
        else:                                                            # dq (B, T, E), dk | dv (B, S, 2E)
            g_query, (dq_out,) = _packed_heads(g, n, t_len, 1, num_heads, e) \
                if query.requires_grad else (None, (None,))
            g_kv, kv_outs = _packed_heads(g, n, s_len, 2, num_heads, e) \
                if kv_grad else (None, (None, None))
            outs = (dq_out,) + tuple(kv_outs)
        _, _, _, d_mask = _attend_backward(
            _split_heads(g, num_heads), None, q, k, v, p, drop, pd, scale,
            (query.requires_grad, kv_grad, kv_grad), mask_shape, outs)
        grads = (g_query,) if packed else (g_query, g_kv)
        return grads + ((d_mask,) if additive is not None else ())
    parents = (query,) if packed else (query, key_value)
    if additive is not None:
        parents += (additive,)
    return make(merged, parents, backward, "multi_head_attention")
