"""The catalog of differentiable ops that the property tests in ``test_ops_catalog.py`` walk.

Each entry (an ``Op``) gives

* ``cases``: a hypothesis strategy drawing a ``Case``: the float64 host arrays that become the
  op's (differentiable) tensor inputs, plus constant parameters (dims, index arrays, masks, ...).
  Input domains stay away from kinks (relu at 0, ties of max) and are bounded for saturating ops,
  so that central differences are meaningful;
* ``ref``: a NumPy reference forward, written here independently of ``grad`` on host arrays:
  ``ref(*arrays, **params)`` -> an array or a tuple of arrays;
* ``run``: the call into ``grad``: ``run(*tensors, **params)`` -> a tensor or a tuple of tensors.
  Constants that must live on the device (index arrays, masks) are converted inside ``run``, so
  ``run`` works on whichever backend is active.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import grad
import grad.functional as F


class Case(NamedTuple):
    arrays: tuple          # float64 host arrays: the tensor inputs, in order
    params: dict           # everything else, passed as keyword arguments to ref and run


class Op(NamedTuple):
    name: str
    cases: st.SearchStrategy
    ref: Callable
    run: Callable

    def __repr__(self):
        return f"Op({self.name})"


# ------------------------------------------------------------------------ strategy helpers
def values(lo=-2.0, hi=2.0, away=0.0):
    """Floats in ``[lo, hi]``; with ``away > 0``, only those with ``|v| >= away``."""
    if away <= 0:
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    parts = []
    if hi >= away:
        parts.append(st.floats(max(lo, away), hi, allow_subnormal=False))
    if lo <= -away:
        parts.append(st.floats(lo, min(hi, -away), allow_subnormal=False))
    return st.one_of(*parts)


def arrays(shape, lo=-2.0, hi=2.0, away=0.0):
    return hnp.arrays(np.float64, tuple(shape), elements=values(lo, hi, away))


def shapes(min_dims=1, max_dims=3, min_side=1, max_side=3):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


@st.composite
def distinct_arrays(draw, shape):
    """Values at least 0.25 apart (no ties): for max, whose gradient is not defined at a tie."""
    n = int(np.prod(shape))
    perm = draw(st.permutations(list(range(n))))
    shift = draw(st.floats(-1.0, 1.0))
    return (np.asarray(perm, dtype=np.float64) * 0.25 + shift).reshape(shape)


@st.composite
def dims_spec(draw, ndim):
    """A reduction's ``dim``: None, one axis (possibly negative) or a tuple of distinct axes."""
    if ndim == 0:
        return None
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(axes)


def _np_axes(dim, ndim):
    if dim is None:
        return None
    return (dim % ndim,) if isinstance(dim, int) else tuple(d % ndim for d in dim)


def _t(a):
    """A constant (index array, mask) on the active backend."""
    return grad.tensor(np.asarray(a))


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _np_erf(a):
    return np.asarray(np.vectorize(math.erf, otypes=[np.float64])(a))


def _log_softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


CATALOG: list[Op] = []


def op(name, cases, ref, run):
    CATALOG.append(Op(name, cases, ref, run))


# ==================================================================== elementwise arithmetic
@st.composite
def broadcast_pair(draw, lo=-2.0, hi=2.0, lo_b=None, hi_b=None, away_b=0.0):
    bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
    a = draw(arrays(bs.input_shapes[0], lo, hi))
    b = draw(arrays(bs.input_shapes[1], lo if lo_b is None else lo_b, hi if hi_b is None else hi_b,
                    away_b))
    return Case((a, b), {})


op("add", broadcast_pair(), lambda a, b: a + b, lambda a, b: a + b)
op("sub", broadcast_pair(), lambda a, b: a - b, lambda a, b: a - b)
op("mul", broadcast_pair(), lambda a, b: a * b, lambda a, b: a * b)
op("div", broadcast_pair(away_b=0.5), lambda a, b: a / b, lambda a, b: a / b)
op("pow_tensor", broadcast_pair(lo=0.5, hi=2.0, lo_b=-2.0, hi_b=2.0),
   lambda a, b: np.power(a, b), lambda a, b: a ** b)
op("neg", st.builds(lambda a: Case((a,), {}), shapes(min_dims=0).flatmap(arrays)),
   lambda a: -a, lambda a: -a)


@st.composite
def with_scalar(draw, lo=-2.0, hi=2.0, away=0.0, s_lo=-3.0, s_hi=3.0, s_away=0.0):
    a = draw(shapes(min_dims=0).flatmap(lambda s: arrays(s, lo, hi, away)))
    s = draw(values(s_lo, s_hi, s_away))
    return Case((a,), {"s": s})


# Python scalars on either side of each operator.
op("scalar_add", with_scalar(), lambda a, s: a + s, lambda a, s: a + s)
op("scalar_radd", with_scalar(), lambda a, s: s + a, lambda a, s: s + a)
op("scalar_sub", with_scalar(), lambda a, s: a - s, lambda a, s: a - s)
op("scalar_rsub", with_scalar(), lambda a, s: s - a, lambda a, s: s - a)
op("scalar_mul", with_scalar(), lambda a, s: a * s, lambda a, s: a * s)
op("scalar_rmul", with_scalar(), lambda a, s: s * a, lambda a, s: s * a)
op("scalar_div", with_scalar(s_away=0.5), lambda a, s: a / s, lambda a, s: a / s)
op("scalar_rdiv", with_scalar(away=0.5), lambda a, s: s / a, lambda a, s: s / a)
op("scalar_pow", with_scalar(lo=0.3, hi=2.0).flatmap(
       lambda c: st.sampled_from([2, 3, 0.5, -1, 1.5, -0.5, 2.5]).map(lambda p: Case(c.arrays, {"s": p}))),
   lambda a, s: np.power(a, s), lambda a, s: a ** s)
op("scalar_pow_int", with_scalar().flatmap(
       lambda c: st.sampled_from([1, 2, 3]).map(lambda p: Case(c.arrays, {"s": p}))),
   lambda a, s: np.power(a, s), lambda a, s: a ** s)
op("scalar_rpow", with_scalar(s_lo=0.5, s_hi=3.0), lambda a, s: np.power(s, a), lambda a, s: s ** a)


# ============================================================================ matrix products
@st.composite
def matmul_2d(draw):
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return Case((draw(arrays((n, k))), draw(arrays((k, m)))), {})


@st.composite
def matmul_batched(draw):
    bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=2, max_side=2))
    n, k, m = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    a = draw(arrays(bs.input_shapes[0] + (n, k)))
    b = draw(arrays(bs.input_shapes[1] + (k, m)))
    return Case((a, b), {})


@st.composite
def matmul_1d(draw):
    """Vectors on one side or both: (k)@(k), (k)@(k,m), (n,k)@(k), (k)@(b,k,m), (b,n,k)@(k)."""
    k, n, m, b = (draw(st.integers(1, 3)) for _ in range(4))
    kind = draw(st.sampled_from(["vv", "vm", "mv", "vb", "bv"]))
    sa, sb = {"vv": ((k,), (k,)), "vm": ((k,), (k, m)), "mv": ((n, k), (k,)),
              "vb": ((k,), (b, k, m)), "bv": ((b, n, k), (k,))}[kind]
    return Case((draw(arrays(sa)), draw(arrays(sb))), {})


@st.composite
def bmm_case(draw):
    b, n, k, m = (draw(st.integers(1, 3)) for _ in range(4))
    return Case((draw(arrays((b, n, k))), draw(arrays((b, k, m)))), {})


op("matmul_2d", matmul_2d(), lambda a, b: a @ b, lambda a, b: grad.matmul(a, b))
op("matmul_batched", matmul_batched(), lambda a, b: np.matmul(a, b), lambda a, b: a @ b)
op("matmul_1d", matmul_1d(), lambda a, b: np.matmul(a, b), lambda a, b: a @ b)
op("bmm", bmm_case(), lambda a, b: np.matmul(a, b), lambda a, b: grad.bmm(a, b))


# ================================================================================ reductions
@st.composite
def reduction(draw, distinct=False):
    shape = draw(shapes(min_dims=0))
    a = draw(distinct_arrays(shape) if distinct else arrays(shape))
    return Case((a,), {"dim": draw(dims_spec(len(shape))), "keepdim": draw(st.booleans())})


op("sum", reduction(),
   lambda a, dim, keepdim: np.asarray(np.sum(a, axis=_np_axes(dim, a.ndim), keepdims=keepdim)),
   lambda a, dim, keepdim: a.sum(dim, keepdim))
op("mean", reduction(),
   lambda a, dim, keepdim: np.asarray(np.mean(a, axis=_np_axes(dim, a.ndim), keepdims=keepdim)),
   lambda a, dim, keepdim: grad.mean(a, dim=dim, keepdim=keepdim))
op("amax", reduction(distinct=True),
   lambda a, dim, keepdim: np.asarray(np.max(a, axis=_np_axes(dim, a.ndim), keepdims=keepdim)),
   lambda a, dim, keepdim: grad.amax(a, dim, keepdim))
op("max", reduction(distinct=True),
   lambda a, dim, keepdim: np.asarray(np.max(a, axis=_np_axes(dim, a.ndim), keepdims=keepdim)),
   lambda a, dim, keepdim: a.max(dim=dim, keepdim=keepdim))


# ========================================================================= elementwise maps
def unary(lo, hi, away=0.0):
    return shapes(min_dims=0).flatmap(lambda s: arrays(s, lo, hi, away)).map(lambda a: Case((a,), {}))


op("exp", unary(-3, 3), np.exp, grad.exp)
op("log", unary(0.2, 5), np.log, lambda a: a.log())
op("sqrt", unary(0.2, 5), np.sqrt, grad.sqrt)
op("tanh", unary(-3, 3), np.tanh, grad.tanh)
op("sigmoid", unary(-6, 6), _sig, lambda a: a.sigmoid())
op("relu", unary(-3, 3, away=0.05), lambda a: np.maximum(a, 0.0), grad.relu)
op("erf", unary(-3, 3), lambda a: _np_erf(a), grad.erf)
op("gelu", unary(-4, 4), lambda a: a * 0.5 * (1.0 + _np_erf(a / np.sqrt(2.0))), F.gelu)
op("gelu_tanh", unary(-4, 4),
   lambda a: 0.5 * a * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (a + 0.044715 * a ** 3))),
   lambda a: F.gelu(a, approximate="tanh"))


# ==================================================================================== shapes
@st.composite
def reshape_case(draw):
    shape = draw(shapes(min_dims=0))
    n = int(np.prod(shape))
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    d = draw(st.sampled_from(divisors))
    options = [(n,), (-1,), (d, n // d), (d, -1), (1, n, 1), tuple(reversed(shape))]
    if n == 1:
        options.append(())
    target = draw(st.sampled_from(options))
    return Case((draw(arrays(shape)),), {"shape": target})


op("reshape", reshape_case(), lambda a, shape: np.reshape(a, shape), lambda a, shape: a.reshape(shape))
op("view", reshape_case(), lambda a, shape: np.reshape(a, shape), lambda a, shape: a.view(*shape))


@st.composite
def transpose_case(draw):
    shape = draw(shapes(min_dims=1))
    nd = len(shape)
    return Case((draw(arrays(shape)),), {"d0": draw(st.integers(-nd, nd - 1)),
                                         "d1": draw(st.integers(-nd, nd - 1))})


op("transpose", transpose_case(), lambda a, d0, d1: np.swapaxes(a, d0, d1),
   lambda a, d0, d1: a.transpose(d0, d1))


@st.composite
def permute_case(draw):
    shape = draw(shapes(min_dims=1))
    perm = tuple(draw(st.permutations(list(range(len(shape))))))
    if draw(st.booleans()):
        perm = tuple(p - len(shape) for p in perm)         # negative dims work too
    return Case((draw(arrays(shape)),), {"dims": perm})


op("permute", permute_case(), lambda a, dims: np.transpose(a, dims), lambda a, dims: a.permute(*dims))


@st.composite
def unsqueeze_case(draw):
    shape = draw(shapes(min_dims=0))
    return Case((draw(arrays(shape)),), {"dim": draw(st.integers(-len(shape) - 1, len(shape)))})


op("unsqueeze", unsqueeze_case(), lambda a, dim: np.expand_dims(a, dim), lambda a, dim: a.unsqueeze(dim))


@st.composite
def squeeze_case(draw):
    shape = draw(shapes(min_dims=1, min_side=1, max_side=2))
    dim = draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    return Case((draw(arrays(shape)),), {"dim": dim})


def _np_squeeze(a, dim):
    if dim is None:
        return np.squeeze(a)
    return np.squeeze(a, dim) if a.shape[dim] == 1 else a   # PyTorch: a no-op on a non-1 dim


op("squeeze", squeeze_case(), _np_squeeze, lambda a, dim: a.squeeze(dim))


@st.composite
def expand_case(draw):
    base = draw(shapes(min_dims=0, max_side=2))
    lead = draw(st.lists(st.integers(1, 3), max_size=2))
    target = list(lead)
    for s in base:
        target.append(draw(st.integers(1, 3)) if s == 1 else draw(st.sampled_from([s, -1])))
    return Case((draw(arrays(base)),), {"shape": tuple(target)})


def _np_expand(a, shape):
    full = tuple(a.shape[i - len(shape) + a.ndim] if s == -1 else s for i, s in enumerate(shape))
    return np.broadcast_to(a, full)


op("expand", expand_case(), _np_expand, lambda a, shape: a.expand(*shape))


@st.composite
def cat_case(draw):
    shape = list(draw(shapes(min_dims=1)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        shape[dim] = draw(st.integers(1, 3))
        pieces.append(draw(arrays(tuple(shape))))
    return Case(tuple(pieces), {"dim": dim})


op("cat", cat_case(), lambda *xs, dim: np.concatenate(xs, axis=dim),
   lambda *xs, dim: grad.cat(list(xs), dim=dim))


@st.composite
def stack_case(draw):
    shape = draw(shapes(min_dims=0))
    n = draw(st.integers(1, 3))
    dim = draw(st.integers(-len(shape) - 1, len(shape)))
    return Case(tuple(draw(arrays(shape)) for _ in range(n)), {"dim": dim})


op("stack", stack_case(), lambda *xs, dim: np.stack(xs, axis=dim),
   lambda *xs, dim: grad.stack(list(xs), dim=dim))


@st.composite
def split_case(draw):
    shape = draw(shapes(min_dims=1, max_side=4))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[dim]
    if draw(st.booleans()):
        sections = draw(st.integers(1, n))
    else:
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        sections = [b - a for a, b in zip([0] + cuts, cuts + [n])]
        assume(all(s > 0 for s in sections))
    return Case((draw(arrays(shape)),), {"sections": sections, "dim": dim})


def _np_split(a, sections, dim):
    n = a.shape[dim]
    sizes = [min(sections, n - s) for s in range(0, n, sections)] if isinstance(sections, int) \
        else sections
    return tuple(np.split(a, np.cumsum(sizes)[:-1], axis=dim))


op("split", split_case(), _np_split, lambda a, sections, dim: a.split(sections, dim))


@st.composite
def basic_index(draw, shape):
    """A basic index (ints, slices, ``...``, ``None``) whose slice bounds stay inside the axis
    (out-of-range slice bounds are unspecified by the array API)."""
    n_used = draw(st.integers(0, len(shape)))
    parts = []
    for n in shape[:n_used]:
        kind = draw(st.sampled_from(["int", "slice", "full"]))
        if kind == "int":
            parts.append(draw(st.integers(-n, n - 1)))
        elif kind == "full":
            parts.append(slice(None))
        else:
            bound = st.none() | st.integers(-n, n)
            parts.append(slice(draw(bound), draw(bound), draw(st.sampled_from([None, 1, 2, -1, -2]))))
    if n_used < len(shape) and draw(st.booleans()):
        parts.append(Ellipsis)
    for _ in range(draw(st.integers(0, 2))):
        parts.insert(draw(st.integers(0, len(parts))), None)
    return tuple(parts) if len(parts) != 1 or draw(st.booleans()) else parts[0]


@st.composite
def getitem_case(draw):
    shape = draw(shapes(min_dims=1, max_side=4))
    idx = draw(basic_index(shape))
    a = draw(arrays(shape))
    assume(a[idx].size > 0)
    return Case((a,), {"idx": idx})


@st.composite
def getitem_named_case(draw):
    """The forms the models use: ``x[:, t]``, ``x[..., a:b]``, ``x[None]``, ``x[t]``."""
    shape = draw(shapes(min_dims=2, max_side=4))
    kind = draw(st.sampled_from(["col", "last_range", "new_axis", "row"]))
    if kind == "col":
        idx = (slice(None), draw(st.integers(-shape[1], shape[1] - 1)))
    elif kind == "last_range":
        a_ = draw(st.integers(0, shape[-1] - 1))
        idx = (Ellipsis, slice(a_, draw(st.integers(a_ + 1, shape[-1]))))
    elif kind == "new_axis":
        idx = None
    else:
        idx = draw(st.integers(0, shape[0] - 1))
    return Case((draw(arrays(shape)),), {"idx": idx})


op("getitem", getitem_case(), lambda a, idx: a[idx], lambda a, idx: a[idx])
op("getitem_named", getitem_named_case(), lambda a, idx: a[idx], lambda a, idx: a[idx])


# ============================================================================ gathers, masks
@st.composite
def index_select_case(draw):
    shape = draw(shapes(min_dims=1))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[dim]
    idx = np.asarray(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5)), dtype=np.int64)
    return Case((draw(arrays(shape)),), {"dim": dim, "index": idx})


op("index_select", index_select_case(),
   lambda a, dim, index: np.take(a, index, axis=dim),
   lambda a, dim, index: a.index_select(dim, _t(index)))


@st.composite
def gather_case(draw):
    shape = draw(shapes(min_dims=1))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    ishape = list(shape)
    ishape[dim] = draw(st.integers(1, 4))
    index = draw(hnp.arrays(np.int64, tuple(ishape), elements=st.integers(0, shape[dim] - 1)))
    return Case((draw(arrays(shape)),), {"dim": dim, "index": index})


op("gather", gather_case(),
   lambda a, dim, index: np.take_along_axis(a, index, axis=dim),
   lambda a, dim, index: grad.gather(a, dim, _t(index)))


@st.composite
def where_case(draw):
    bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3))
    cond = draw(hnp.arrays(np.bool_, bs.input_shapes[0]))
    return Case((draw(arrays(bs.input_shapes[1])), draw(arrays(bs.input_shapes[2]))), {"cond": cond})


op("where", where_case(), lambda a, b, cond: np.where(cond, a, b),
   lambda a, b, cond: grad.where(_t(cond), a, b))


@st.composite
def where_scalar_case(draw):
    shape = draw(shapes(min_dims=0))
    cond = draw(hnp.arrays(np.bool_, shape))
    return Case((draw(arrays(shape)),), {"cond": cond, "s": draw(values(-3, 3)),
                                         "left": draw(st.booleans())})


op("where_scalar", where_scalar_case(),
   lambda a, cond, s, left: np.where(cond, s, a) if left else np.where(cond, a, s),
   lambda a, cond, s, left: grad.where(_t(cond), s, a) if left else grad.where(_t(cond), a, s))


@st.composite
def masked_fill_case(draw):
    shape = draw(shapes(min_dims=0))
    mshape = draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=len(shape)))
    mask = draw(hnp.arrays(np.bool_, mshape))
    return Case((draw(arrays(shape)),), {"mask": mask, "value": draw(st.sampled_from([-5.0, 0.0, 2.5]))})


op("masked_fill", masked_fill_case(),
   lambda a, mask, value: np.where(mask, value, a),
   lambda a, mask, value: a.masked_fill(_t(mask), value))


# ======================================================================== grad.functional
@st.composite
def softmax_case(draw):
    shape = draw(shapes(min_dims=1, max_side=4))
    return Case((draw(arrays(shape, -3, 3)),), {"dim": draw(st.integers(-len(shape), len(shape) - 1))})


def _np_softmax(a, dim):
    e = np.exp(a - np.max(a, axis=dim, keepdims=True))
    return e / np.sum(e, axis=dim, keepdims=True)


op("softmax", softmax_case(), _np_softmax, lambda a, dim: F.softmax(a, dim))
op("log_softmax", softmax_case(), lambda a, dim: _log_softmax(a, dim),
   lambda a, dim: F.log_softmax(a, dim=dim))


def _np_reduce(losses, weights, reduction):
    if reduction == "none":
        return losses
    if reduction == "sum":
        return np.asarray(losses.sum())
    return np.asarray(losses.sum() / weights.sum())


@st.composite
def classification_case(draw, smoothing=False):
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    target = np.asarray(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)
    ignore = draw(st.sampled_from([-100, 0, c - 1]))
    if draw(st.booleans()):                                # some rows padded with ignore_index
        pad = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        target = np.where(pad, ignore, target)
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    if reduction == "mean":
        assume((target != ignore).any())                   # a mean over no rows is NaN
    params = {"target": target, "ignore_index": ignore, "reduction": reduction}
    if smoothing:
        params["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.3]))
    return Case((draw(arrays((n, c), -3, 3)),), params)


def _np_nll(a, target, ignore_index, reduction):
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    losses = -a[np.arange(len(target)), safe] * valid
    return _np_reduce(losses, valid.astype(np.float64), reduction)


def _np_cross_entropy(a, target, ignore_index, reduction, label_smoothing):
    n, c = a.shape
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    q = np.full((n, c), label_smoothing / c)
    q[np.arange(n), safe] += 1.0 - label_smoothing
    losses = -np.sum(q * _log_softmax(a, 1), axis=1) * valid
    return _np_reduce(losses, valid.astype(np.float64), reduction)


op("nll_loss", classification_case(), _np_nll,
   lambda a, target, ignore_index, reduction:
       F.nll_loss(a, _t(target), ignore_index=ignore_index, reduction=reduction))
op("cross_entropy", classification_case(smoothing=True), _np_cross_entropy,
   lambda a, target, ignore_index, reduction, label_smoothing:
       F.cross_entropy(a, _t(target), ignore_index=ignore_index, reduction=reduction,
                       label_smoothing=label_smoothing))


@st.composite
def linear_case(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    n_in, n_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    arrs = [draw(arrays(lead + (n_in,))), draw(arrays((n_out, n_in)))]
    if draw(st.booleans()):
        arrs.append(draw(arrays((n_out,))))
    return Case(tuple(arrs), {})


def _np_linear(x, w, b=None):
    return x @ w.T + (0.0 if b is None else b)


op("linear", linear_case(), _np_linear, lambda x, w, b=None: F.linear(x, w, b))


@st.composite
def embedding_case(draw):
    v, e = draw(st.integers(2, 5)), draw(st.integers(1, 3))
    ishape = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4))
    ids = draw(hnp.arrays(np.int64, ishape, elements=st.integers(0, v - 1)))   # repeats likely
    padding_idx = draw(st.none() | st.integers(0, v - 1))
    return Case((draw(arrays((v, e))),), {"ids": ids, "padding_idx": padding_idx})


def _np_embedding(w, ids, padding_idx):
    # The padding row gets no gradient by convention, so the checked function zeroes the outputs
    # at padding positions (as a masked loss does): then the convention is also the derivative.
    keep = np.ones(ids.shape) if padding_idx is None else (ids != padding_idx).astype(np.float64)
    return w[ids] * keep[..., None]


def _run_embedding(w, ids, padding_idx):
    out = F.embedding(_t(ids), w, padding_idx=padding_idx)
    if padding_idx is None:
        return out
    keep = (ids != padding_idx).astype(np.float64)[..., None]
    return out * grad.tensor(keep.astype(grad.backend.dtype_name(w.dtype)))


op("embedding", embedding_case(), _np_embedding, _run_embedding)


@st.composite
def dropout_case(draw):
    shape = draw(shapes(min_dims=1, max_side=4))
    return Case((draw(arrays(shape)),), {"p": draw(st.sampled_from([0.0, 0.2, 0.5, 0.9])),
                                         "seed": draw(st.integers(0, 2 ** 32 - 1))})


def _np_dropout(a, p, seed):
    if p == 0.0:
        return a
    keep = np.random.Generator(np.random.PCG64(seed)).random(a.shape) < 1.0 - p
    return a * keep / (1.0 - p)


op("dropout", dropout_case(), _np_dropout,
   lambda a, p, seed: F.dropout(a, p, training=True, generator=grad.Generator(seed)))


@st.composite
def lstm_cell_case(draw):
    b, n_in, h = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    shapes_ = [(b, n_in), (b, h), (b, h), (4 * h, n_in), (4 * h, h)]
    if draw(st.booleans()):
        shapes_ += [(4 * h,), (4 * h,)]
    return Case(tuple(draw(arrays(s, -1.5, 1.5)) for s in shapes_), {})


def _np_lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    n = h.shape[1]
    z = x @ w_ih.T + h @ w_hh.T + (0.0 if b_ih is None else b_ih + b_hh)
    i, f, g, o = _sig(z[:, :n]), _sig(z[:, n:2 * n]), np.tanh(z[:, 2 * n:3 * n]), _sig(z[:, 3 * n:])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


op("lstm_cell", lstm_cell_case(), _np_lstm_cell, F.lstm_cell)
op("lstm_cell_reference", lstm_cell_case(), _np_lstm_cell, F.lstm_cell_reference)


@st.composite
def lstm_step_case(draw):
    b, h = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    mask = None
    if draw(st.booleans()):
        mask = np.asarray(draw(st.lists(st.booleans(), min_size=b, max_size=b)), dtype=np.float64)[:, None]
    return Case((draw(arrays((b, 4 * h), -1.5, 1.5)), draw(arrays((b, 2 * h), -1.5, 1.5)),
                 draw(arrays((4 * h, h), -1.5, 1.5))), {"mask": mask})


def _np_lstm_step(x_gates, state, w_hh, mask):
    n = w_hh.shape[1]
    h, c = state[:, :n], state[:, n:]
    z = x_gates + h @ w_hh.T
    i, f, g, o = _sig(z[:, :n]), _sig(z[:, n:2 * n]), np.tanh(z[:, 2 * n:3 * n]), _sig(z[:, 3 * n:])
    c_new = f * c + i * g
    out = np.concatenate([o * np.tanh(c_new), c_new], axis=1)
    return out if mask is None else np.where(mask > 0, out, state)


def _run_lstm_step(x_gates, state, w_hh, mask):
    if mask is not None:
        mask = grad.tensor(mask.astype(grad.backend.dtype_name(state.dtype)))
    return F.lstm_step(x_gates, state, w_hh, mask)


op("lstm_step", lstm_step_case(), _np_lstm_step, _run_lstm_step)


@st.composite
def lstm_layer_case(draw):
    t, b, h = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    masks = None
    if draw(st.booleans()):                       # lengths 0..T per row, as nn.LSTM makes them
        lengths = np.asarray(draw(st.lists(st.integers(0, t), min_size=b, max_size=b)))
        masks = (np.arange(t)[:, None] < lengths[None, :]).astype(np.float64)[:, :, None]
    return Case((draw(arrays((t, b, 4 * h), -1.5, 1.5)), draw(arrays((b, 2 * h), -1.5, 1.5)),
                 draw(arrays((4 * h, h), -1.5, 1.5))),
                {"masks": masks, "reverse": draw(st.booleans())})


def _np_lstm_layer(x_gates, state, w_hh, masks, reverse):
    n_steps, n = x_gates.shape[0], w_hh.shape[1]
    states = [None] * n_steps
    for t in (range(n_steps - 1, -1, -1) if reverse else range(n_steps)):
        state = _np_lstm_step(x_gates[t], state, w_hh, None if masks is None else masks[t])
        states[t] = state
    hc = np.stack(states)                                            # (T, B, 2H)
    return np.stack([hc[:, :, :n], hc[:, :, n:]])                     # (2, T, B, H)


def _run_lstm_layer(x_gates, state, w_hh, masks, reverse):
    if masks is not None:
        masks = grad.tensor(masks.astype(grad.backend.dtype_name(state.dtype))).data
    return F.lstm_layer(x_gates, state, w_hh, masks, reverse=reverse)


op("lstm_layer", lstm_layer_case(), _np_lstm_layer, _run_lstm_layer)


# ================================================================== transformer layers' math
@st.composite
def layer_norm_case(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    norm = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=3))
    # Values at least 0.25 apart: a normalised group is never (nearly) constant, where the
    # derivative 1 / sqrt(var + eps) would be too steep for central differences.
    arrs = [draw(distinct_arrays(lead + norm))]
    affine = draw(st.sampled_from(["none", "weight", "bias", "both"]))
    if affine in ("weight", "both"):
        arrs.append(draw(arrays(norm)))
    if affine in ("bias", "both"):
        arrs.append(draw(arrays(norm)))
    return Case(tuple(arrs), {"normalized_shape": norm, "affine": affine,
                              "eps": draw(st.sampled_from([1e-5, 1e-3, 0.5]))})


def _affine(params, affine):
    weight = params[0] if affine in ("weight", "both") else None
    bias = params[-1] if affine in ("bias", "both") else None
    return weight, bias


def _np_layer_norm(x, *params, normalized_shape, affine, eps):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    centred = x - x.mean(axis=axes, keepdims=True)
    y = centred / np.sqrt((centred ** 2).mean(axis=axes, keepdims=True) + eps)
    weight, bias = _affine(params, affine)
    return y * (1.0 if weight is None else weight) + (0.0 if bias is None else bias)


def _run_layer_norm(fn):
    def run(x, *params, normalized_shape, affine, eps):
        weight, bias = _affine(params, affine)
        return fn(x, normalized_shape, weight, bias, eps=eps)
    return run


op("layer_norm", layer_norm_case(), _np_layer_norm, _run_layer_norm(F.layer_norm))
op("layer_norm_reference", layer_norm_case(), _np_layer_norm,
   _run_layer_norm(F.layer_norm_reference))


@st.composite
def attention_case(draw):
    """query (..., T, d), key (..., S, d), value (..., S, dv); no mask, a bool mask (True = may
    attend; rows with nothing allowed happen), a float mask (an input: it gets a gradient) or the
    causal mask; masks broadcast from a smaller shape; dropout with a seed; weights returned."""
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=2))
    t, s, d, dv = (draw(st.integers(1, 3)) for _ in range(4))
    arrs = [draw(arrays(lead + (t, d))), draw(arrays(lead + (s, d))), draw(arrays(lead + (s, dv)))]
    kind = draw(st.sampled_from(["none", "bool", "float", "causal"]))
    full_shape = lead + (t, s)
    n_dropped = draw(st.integers(0, len(full_shape)))               # leading dims left out
    mask_shape = tuple(n if draw(st.booleans()) else 1 for n in full_shape[n_dropped:])
    bool_mask = None
    if kind == "bool":
        bool_mask = draw(hnp.arrays(np.bool_, mask_shape))
    elif kind == "float":
        arrs.append(draw(arrays(mask_shape)))
    return Case(tuple(arrs), {"kind": kind, "bool_mask": bool_mask,
                              "scale": draw(st.sampled_from([None, 0.7])),
                              "dropout_p": draw(st.sampled_from([0.0, 0.0, 0.3])),
                              "seed": draw(st.integers(0, 2 ** 32 - 1)),
                              "need_weights": draw(st.booleans())})


def _np_attention(q, k, v, *float_mask, kind, bool_mask, scale, dropout_p, seed, need_weights):
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale                      # (..., T, S)
    if float_mask:
        scores = scores + float_mask[0]
    allowed = np.tril(np.ones(scores.shape[-2:], bool)) if kind == "causal" else bool_mask
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    e = np.exp(scores - np.where(np.isinf(top), 0.0, top))
    total = e.sum(axis=-1, keepdims=True)
    w = e / np.where(total > 0, total, 1.0)                           # rows with no key: 0
    if dropout_p:
        keep = np.random.Generator(np.random.PCG64(seed)).random(w.shape) < 1.0 - dropout_p
        w = w * keep / (1.0 - dropout_p)
    out = w @ v
    return (out, w) if need_weights else out


def _run_attention(fn):
    def run(q, k, v, *float_mask, kind, bool_mask, scale, dropout_p, seed, need_weights):
        mask = float_mask[0] if float_mask else _t(bool_mask) if kind == "bool" else None
        return fn(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=kind == "causal",
                  scale=scale, generator=grad.Generator(seed), need_weights=need_weights)
    return run


op("scaled_dot_product_attention", attention_case(), _np_attention,
   _run_attention(F.scaled_dot_product_attention))
op("scaled_dot_product_attention_reference", attention_case(), _np_attention,
   _run_attention(F.scaled_dot_product_attention_reference))


@st.composite
def mse_case(draw):
    shape = draw(shapes(min_dims=0))
    return Case((draw(arrays(shape)), draw(arrays(shape))),
                {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))})


def _np_mse(a, b, reduction):
    sq = (a - b) ** 2
    return sq if reduction == "none" else np.asarray(sq.sum() if reduction == "sum" else sq.mean())


op("mse_loss", mse_case(), _np_mse, lambda a, b, reduction: F.mse_loss(a, b, reduction=reduction))


BY_NAME = {o.name: o for o in CATALOG}
assert len(BY_NAME) == len(CATALOG), "duplicate op names in the catalog"
