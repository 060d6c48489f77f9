"""Gradient accumulation: how the gradients sent to one tensor are summed.

A tensor used by several ops receives one gradient from each; the backward sweep
(``grad/tensor.py``) collects them in a list and calls ``accumulate(received, tensor)`` once, when
every consumer has sent its share. That is the only entry point. Its reference,
``accumulate_reference``, is the rule itself: a plain dense sum. The fast twin runs the same sum
with three economies:

* gradients kept **factored** until the end: ``linear`` and ``lstm_step`` send a weight gradient
  as ``MatmulGrad`` (``g^T x`` not yet multiplied), ``attention_lookup`` sends the encoder outputs
  an ``OuterGrad``; T of them are merged by concatenating their factors and formed as ONE matrix
  product, instead of T small products and T full-size additions;
* slices kept **sparse**: ``x[t]`` sends a ``SliceGrad`` (the slice only), added into place;
* **buffer ownership**: the first dense gradient an op returned may be shared (an op may hand the
  same array to two inputs), so the sum is made in a new buffer that belongs to the sweep (the
  sum of the first two when both are dense: no copy before it) and the later shares are added
  into it in place (the T slices of a sequence cost O(T), not O(T^2)); a leaf never keeps an
  array another tensor may hold.

Under ``grad.reference_mode()`` no op makes a factored or sparse gradient (their references
return dense arrays) and ``accumulate`` runs ``accumulate_reference``. On either path a node's
gradients are kept until the node is visited; on the reference path they are all dense (the
encoder outputs hold one array per decoder step until then), so it needs more memory.
"""
from __future__ import annotations

from . import backend as B
from .modes import fused


class SliceGrad:
    """The gradient of ``x[index]``: zero everywhere but the selected part. Kept sparse until it
    has to be added to something, so slicing a long sequence step by step stays cheap."""

    __slots__ = ("index", "value", "shape", "like")

    def __init__(self, index, value, shape, like):
        self.index, self.value, self.shape, self.like = index, value, shape, like

    def dense(self):
        full = B.zeros(self.shape, like=self.like)
        full[self.index] = self.value
        return full


class Factored:
    """A gradient kept as factors whose product is the dense gradient. Several of the same kind
    sent to one tensor are merged by concatenating their factors (no arithmetic), and the sum is
    formed once, as ONE large matrix product, when the gradient is needed (``dense()``)."""

    __slots__ = ("lefts", "rights")

    def __init__(self, lefts, rights):
        self.lefts, self.rights = list(lefts), list(rights)

    def merge(self, other: "Factored") -> "Factored":
        return type(self)(self.lefts + other.lefts, self.rights + other.rights)


class OuterGrad(Factored):
    """A gradient of shape ``(B, S, H)`` that is a sum of outer products, one per batch row:
    ``sum_k lefts[k][b, :, None] * rights[k][b, None, :]`` with ``lefts[k]`` ``(B, S)`` and
    ``rights[k]`` ``(B, H)``.

    Attention sends such a gradient to the encoder outputs at every decoder step. Adding T of
    them as dense arrays costs T products with an inner dimension of 1 (far below the speed of a
    matrix product) plus T full-size additions; kept as factors, they are summed at the end as ONE
    batched matrix product ``(B, S, K) @ (B, K, H)``.
    """

    __slots__ = ()

    def dense(self):
        xp = B.xp
        left = xp.stack(self.lefts, axis=2)                       # (B, S, K)
        right = xp.stack(self.rights, axis=1)                     # (B, K, H)
        return xp.matmul(left, right)                             # (B, S, H)


class MatmulGrad(Factored):
    """The gradient of a weight ``W`` ``(out, in)`` from products ``y = x W^T``: the sum
    ``sum_k lefts[k]^T @ rights[k]`` with ``lefts[k]`` ``(N_k, out)`` (the output gradients) and
    ``rights[k]`` ``(N_k, in)`` (the inputs).

    A recurrent weight is used at every time step. Summing T per-step products
    ``(out, B) @ (B, in)`` (inner dimension B, plus T full-size additions) is slow; stacking the
    factors makes it ONE product ``(out, T*B) @ (T*B, in)`` at the BLAS's full speed.
    """

    __slots__ = ()

    def dense(self):
        xp = B.xp
        left = self.lefts[0] if len(self.lefts) == 1 else xp.concat(self.lefts, axis=0)    # (N, out)
        right = self.rights[0] if len(self.rights) == 1 else xp.concat(self.rights, axis=0)  # (N, in)
        return xp.matmul(xp.matrix_transpose(left), right)        # (out, in)


_LAZY = (SliceGrad, Factored)


def accumulate_reference(received: list, tensor):
    """The gradient of ``tensor``: the sum of the gradients ``received`` from its consumers.

    Each is made an array of the tensor's own dtype (mixed precision keeps each input's dtype);
    ``astype`` copies, so no two tensors ever share a gradient array.
    """
    xp = B.xp
    total = xp.astype(received[0], tensor.dtype)                  # (tensor.shape), a new array
    for g in received[1:]:
        total = total + xp.astype(g, tensor.dtype)
    return total


@fused(reference=accumulate_reference)
def accumulate(received: list, tensor):
    """The same sum, with factored gradients merged before any arithmetic, slices added into
    place, and a new buffer only where one is needed (see the module docstring)."""
    total, owned = received[0], False          # owned: total is a buffer that no op returned
    for g in received[1:]:
        if isinstance(g, Factored) and type(g) is type(total):
            total = total.merge(g)                                # still factored: no arithmetic
        elif not owned and _plain(total, tensor) and _plain(g, tensor):
            total, owned = total + g, True        # the first sum makes the buffer: no copy first
        else:
            if not owned:
                total, owned = _new_buffer(total, tensor.dtype), True
            _add_into(total, g)
    if isinstance(total, _LAZY):
        total, owned = total.dense(), True
    if total.dtype != tensor.dtype:                               # mixed precision
        total, owned = B.xp.astype(total, tensor.dtype), True
    if tensor.is_leaf and tensor.grad is None and not owned:      # it will be the leaf's .grad:
        total = B.xp.asarray(total, copy=True)                    # never one an op may share
    return total


def _plain(g, tensor) -> bool:
    """Whether ``g`` is a dense array of ``tensor``'s dtype and shape with at least one axis (a
    sum of two such is a new array of the same kind; NumPy's 0-d sums are scalars)."""
    return not isinstance(g, _LAZY) and g.ndim > 0 and g.dtype == tensor.dtype \
        and tuple(g.shape) == tensor.shape


def _new_buffer(g, dtype):
    """A dense copy of ``g`` in ``dtype`` that belongs to the sweep (safe to add into in place)."""
    xp = B.xp
    if isinstance(g, _LAZY):
        g = g.dense()                                             # a new array already
        return g if g.dtype == dtype else xp.astype(g, dtype)
    if g.dtype != dtype:
        g = xp.astype(g, dtype)
    return xp.asarray(g, copy=True)              # an array even where an op made a NumPy scalar


def _add_into(buffer, g) -> None:
    """``buffer += g`` in place, for a dense, sparse or factored ``g``."""
    if isinstance(g, SliceGrad):
        buffer[g.index] = buffer[g.index] + g.value
        return
    if isinstance(g, Factored):
        g = g.dense()
    buffer += g if g.dtype == buffer.dtype else B.xp.astype(g, buffer.dtype)
