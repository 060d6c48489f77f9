"""Primitive differentiable ops. Each op computes its forward result with the array namespace and,
right below, its ``backward(g)``: the gradients of its inputs given the gradient ``g`` of its
output (vector-Jacobian products).

Public names follow PyTorch (``dim``/``keepdim``, ``cat``, ``transpose(dim0, dim1)``); the NumPy
spellings ``axis``/``keepdims`` are accepted as aliases. Calls into the namespace use the array
API's own ``axis``.
"""
from __future__ import annotations

import builtins
import math
from collections import namedtuple

from . import backend as B
from .accumulate import SliceGrad
from .modes import fused
from .tensor import Tensor, as_tensor, make

_NUMBER = (int, float)


def _is_number(x) -> bool:
    return isinstance(x, _NUMBER) and not isinstance(x, bool)


def _unbroadcast(g, shape: tuple):
    """Sum ``g`` over the axes that broadcasting added or stretched, so it has ``shape`` again."""
    if tuple(g.shape) == tuple(shape):
        return g
    xp = B.xp
    lead = g.ndim - len(shape)
    if lead > 0:                            # the added leading dims: a sum of rows
        rows = xp.reshape(g, (-1, math.prod(g.shape[lead:])))          # (leading, rest)
        g = xp.reshape(B.sum_rows(rows), tuple(g.shape[lead:]))
    stretched = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if stretched:
        g = xp.sum(g, axis=stretched, keepdims=True)
    return g


def _resolve_dim(dim, axis, name="dim", default=None):
    """PyTorch's ``dim`` with NumPy's ``axis`` accepted as an alias (not both); ``default`` when
    neither is given."""
    if dim is not None and axis is not None:
        raise TypeError(f"give either {name}= or axis=, not both")
    if dim is None and axis is None:
        return default
    return axis if dim is None else dim


def _required_dim(dim, axis, op: str):
    """``dim`` (or its alias ``axis``) for an op that needs one."""
    d = _resolve_dim(dim, axis)
    if d is None:
        raise TypeError(f"{op}() needs dim= (or its alias axis=)")
    return d


def _resolve_keep(keepdim, keepdims):
    if keepdim is not None and keepdims is not None:
        raise TypeError("give either keepdim= or keepdims=, not both")
    return bool(keepdims if keepdim is None else keepdim)


def _axes(dim, ndim):
    """Normalise ``dim`` (None, int or tuple) to a tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(d % ndim if ndim else 0 for d in dims)


# ===================================================================== elementwise arithmetic
def add(a, b):
    a = as_tensor(a)
    if _is_number(b):
        return make(a.data + b, (a,), lambda g: (g,), "add")
    b = as_tensor(b)
    sa, sb = a.shape, b.shape
    def backward(g):                                   # d(a+b) = da + db
        return _unbroadcast(g, sa), _unbroadcast(g, sb)
    return make(a.data + b.data, (a, b), backward, "add")


def sub(a, b):
    a = as_tensor(a)
    if _is_number(b):
        return make(a.data - b, (a,), lambda g: (g,), "sub")
    b = as_tensor(b)
    sa, sb = a.shape, b.shape
    def backward(g):                                   # d(a-b) = da - db
        return _unbroadcast(g, sa), _unbroadcast(-g, sb)
    return make(a.data - b.data, (a, b), backward, "sub")


def rsub(a, b):                                        # b - a, with b a number
    return make(b - a.data, (a,), lambda g: (-g,), "rsub")


def mul(a, b):
    a = as_tensor(a)
    if _is_number(b):
        return make(a.data * b, (a,), lambda g: (g * b,), "mul")
    b = as_tensor(b)
    x, y = a.data, b.data
    def backward(g):                                   # d(ab) = b da + a db
        return (_unbroadcast(g * y, x.shape) if a.requires_grad else None,
                _unbroadcast(g * x, y.shape) if b.requires_grad else None)
    return make(x * y, (a, b), backward, "mul")


def div(a, b):
    a = as_tensor(a)
    if _is_number(b):
        return make(a.data / b, (a,), lambda g: (g / b,), "div")
    b = as_tensor(b)
    x, y = a.data, b.data
    out = x / y
    def backward(g):                                   # d(a/b) = da / b - (a / b^2) db
        return (_unbroadcast(g / y, x.shape) if a.requires_grad else None,
                _unbroadcast(-g * out / y, y.shape) if b.requires_grad else None)
    return make(out, (a, b), backward, "div")


def rdiv(a, b):                                        # b / a, with b a number
    x = a.data
    out = b / x
    return make(out, (a,), lambda g: (-g * out / x,), "rdiv")


def neg(a):
    return make(-a.data, (a,), lambda g: (-g,), "neg")


def pow(a, p):
    """``a ** p`` for a number ``p`` or a tensor ``p`` (then ``a`` must be positive)."""
    a = as_tensor(a)
    x = a.data
    if _is_number(p):
        out = x ** p
        def backward(g):                               # d(x^p) = p x^(p-1) dx
            return (g * (p * x ** (p - 1)),)
        return make(out, (a,), backward, "pow")
    p = as_tensor(p)
    e = p.data
    out = x ** e
    def backward_t(g):                                 # d(x^e) = e x^(e-1) dx + x^e log(x) de
        return (_unbroadcast(g * e * x ** (e - 1.0), x.shape) if a.requires_grad else None,
                _unbroadcast(g * out * B.xp.log(x), e.shape) if p.requires_grad else None)
    return make(out, (a, p), backward_t, "pow")


def rpow(a, base):                                     # base ** a, with base a positive number
    out = base ** a.data
    return make(out, (a,), lambda g: (g * out * math.log(base),), "rpow")


# ========================================================================== matrix products
def matmul(a, b):
    """``a @ b`` with PyTorch's rules: 2-D, batched (leading dims broadcast), 1-D vectors."""
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim == 1:                                    # (k,) @ (..., k, m) -> (..., m)
        return squeeze(matmul(reshape(a, (1, a.shape[0])), b), -2)
    if b.ndim == 1:                                    # (..., n, k) @ (k,) -> (..., n)
        return squeeze(matmul(a, reshape(b, (b.shape[0], 1))), -1)
    xp = B.xp
    x, y = a.data, b.data
    out = xp.matmul(x, y)                              # (..., n, m)
    def backward(g):                                   # dA = G B^T,  dB = A^T G
        ga = gb = None
        if a.requires_grad:
            ga = _unbroadcast(xp.matmul(g, xp.matrix_transpose(y)), x.shape)
        if b.requires_grad:
            if y.ndim == 2 and x.ndim > 2:             # fold the batch into rows: one GEMM
                k, m = y.shape
                gb = xp.matmul(xp.matrix_transpose(xp.reshape(x, (-1, k))), xp.reshape(g, (-1, m)))
            else:
                gb = _unbroadcast(xp.matmul(xp.matrix_transpose(x), g), y.shape)
        return ga, gb
    return make(out, (a, b), backward, "matmul")


def bmm(a, b):
    """Batched matrix product of ``(B, n, k)`` and ``(B, k, m)`` -> ``(B, n, m)`` (no broadcasting)."""
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ValueError(f"bmm expects (B, n, k) and (B, k, m), got {a.shape} and {b.shape}")
    return matmul(a, b)


# ============================================================================== reductions
def sum(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    xp = B.xp
    axes = _axes(_resolve_dim(dim, axis), x.ndim)
    keep = _resolve_keep(keepdim, keepdims)
    out = xp.sum(x.data, axis=axes, keepdims=keep)
    shape = x.shape
    kept_shape = tuple(1 if i in axes else s for i, s in enumerate(shape))
    def backward(g):                                   # every summed element gets g
        spread = xp.broadcast_to(xp.reshape(g, kept_shape), shape)
        return (xp.asarray(spread, copy=True),)        # a writable array, not a broadcast view
    return make(out, (x,), backward, "sum")


def mean(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    axes = _axes(_resolve_dim(dim, axis), x.ndim)
    count = 1
    for d in axes:
        count *= x.shape[d]
    return div(sum(x, axes, keepdim, keepdims=keepdims), float(count))


def amax(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """Maximum over ``dim``; when several elements tie for the maximum the gradient is split
    evenly between them."""
    xp = B.xp
    axes = _axes(_resolve_dim(dim, axis), x.ndim)
    keep = _resolve_keep(keepdim, keepdims)
    m = xp.max(x.data, axis=axes, keepdims=True)       # kept dims, for broadcasting
    out = m if keep else xp.reshape(m, tuple(s for i, s in enumerate(x.shape) if i not in axes))
    data = x.data
    def backward(g):
        winners = xp.astype(data == m, data.dtype)     # 1 where x equals the max
        share = winners / xp.sum(winners, axis=axes, keepdims=True)
        return (xp.reshape(g, m.shape) * share,)
    return make(out, (x,), backward, "amax")


def max(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """Like ``amax``: returns the values only (use ``argmax`` for the positions)."""
    return amax(x, dim, keepdim, axis=axis, keepdims=keepdims)


def argmax(x, dim=None, keepdim=None, *, axis=None, keepdims=None):
    """Index of the maximum (first one on ties); over all elements when ``dim`` is None. No
    gradient."""
    xp = B.xp
    d = _resolve_dim(dim, axis)
    keep = _resolve_keep(keepdim, keepdims)
    data = x.data if d is not None else xp.reshape(x.data, (-1,))
    return Tensor(xp.argmax(data, axis=d if d is not None else 0, keepdims=keep and d is not None))


TopK = namedtuple("TopK", ["values", "indices"])


def _check_k(k: int, n: int, dim: int) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"topk: k must be between 0 and the size of dim {dim} ({n}), got {k}")


def topk_reference(x, k: int, dim=None, largest: bool = True, *, axis=None):
    """The ``k`` largest (or smallest) entries along ``dim``, by sorting the whole of ``dim``
    stably (equal entries: the lower index first) and keeping the first ``k``: the readable
    twin of ``topk``."""
    xp = B.xp
    dim = _resolve_dim(dim, axis, default=-1)
    data = x.data
    _check_k(k, data.shape[dim], dim)
    key = -data if largest else data
    order = xp.argsort(key, axis=dim, stable=True)
    idx = xp.take(order, B.arange(k, like=order), axis=dim % x.ndim)
    return TopK(Tensor(xp.take_along_axis(data, idx, axis=dim)), Tensor(idx))


@fused(reference=topk_reference)
def topk(x, k: int, dim=None, largest: bool = True, *, axis=None):
    """The ``k`` largest (or smallest) entries along ``dim`` (default -1), sorted (equal
    entries: the lower index first). No gradient. The same result as ``topk_reference``
    without sorting the whole of ``dim`` (``backend.smallest_k``: a partition, then a sort of
    the ``k`` kept): beam search takes the best ``2K`` of ``K * V`` scores per sentence."""
    xp = B.xp
    dim = _resolve_dim(dim, axis, default=-1)
    data = x.data
    _check_k(k, data.shape[dim], dim)
    key = xp.moveaxis(-data if largest else data, dim, -1)               # (..., n)
    idx = xp.moveaxis(B.smallest_k(key, k), -1, dim)                      # (..., k, ...)
    return TopK(Tensor(xp.take_along_axis(data, idx, axis=dim)), Tensor(idx))


# ============================================================================ elementwise maps
def exp(x):
    out = B.xp.exp(x.data)
    return make(out, (x,), lambda g: (g * out,), "exp")                 # d e^x = e^x dx


def log(x):
    data = x.data
    return make(B.xp.log(data), (x,), lambda g: (g / data,), "log")     # d log x = dx / x


def sqrt(x):
    out = B.xp.sqrt(x.data)
    return make(out, (x,), lambda g: (g * 0.5 / out,), "sqrt")


def tanh(x):
    out = B.xp.tanh(x.data)
    return make(out, (x,), lambda g: (g * (1.0 - out * out),), "tanh")  # 1 - tanh^2


def sigmoid(x):
    out = 0.5 * (B.xp.tanh(0.5 * x.data) + 1.0)       # = 1 / (1 + e^-x), without overflow
    return make(out, (x,), lambda g: (g * out * (1.0 - out),), "sigmoid")


def erf(x):
    """The error function (``grad.backend.erf``); d erf(x) = 2 / sqrt(pi) exp(-x^2) dx."""
    xp = B.xp
    data = x.data
    slope = 2.0 / math.sqrt(math.pi)
    return make(B.erf(data), (x,), lambda g: (g * slope * xp.exp(-data * data),), "erf")


def relu(x):
    """max(x, 0), with derivative 0 at x = 0 (PyTorch's convention). One pass forward; the
    backward reads which inputs were positive off the output (``out > 0``), so nothing but the
    output is kept. (A multiplication by the 0/1 mask, not ``where``: NumPy's ``where`` on a
    random mask branches per element and is ten times slower.)"""
    xp = B.xp
    zero = B.full((), 0, like=x.data)
    out = xp.maximum(x.data, zero)
    return make(out, (x,), lambda g: (g * xp.astype(out > zero, g.dtype),), "relu")


def astype(x, dtype):
    src = x.dtype
    if dtype == src:
        return x
    return make(B.xp.astype(x.data, dtype), (x,), lambda g: (B.xp.astype(g, src),), "astype")


def to(x, target) -> Tensor:
    """``Tensor.to``: convert to a dtype (``"float64"``, ``grad.float64``; differentiable) or move
    to a backend (``"numpy"``, ``"cupy"``, ``"array_api_strict"``: the array is copied through the
    host into the namespace that is active after ``grad.backend.use(...)``)."""
    if isinstance(target, str) and target in B.BACKENDS:
        with B.use(target):
            return Tensor(B.from_numpy(x.numpy()), requires_grad=x.requires_grad)
    return astype(x, B.get_dtype(target))


# =================================================================================== shapes
def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x, *shape):
    xp = B.xp
    old = x.shape
    out = xp.reshape(x.data, _shape_arg(shape))
    return make(out, (x,), lambda g: (xp.reshape(g, old),), "reshape")


view = reshape


def permute(x, *dims):
    xp = B.xp
    dims = tuple(d % x.ndim for d in _shape_arg(dims))
    inverse = tuple(sorted(range(len(dims)), key=lambda i: dims[i]))
    out = xp.permute_dims(x.data, dims)
    return make(out, (x,), lambda g: (xp.permute_dims(g, inverse),), "permute")


def transpose(x, dim0: int, dim1: int):
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims)


def unsqueeze(x, dim=None, *, axis=None):
    dim = _required_dim(dim, axis, "unsqueeze") % (x.ndim + 1)
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


def squeeze(x, dim=None, *, axis=None):
    """Drop ``dim`` if its size is 1 (all size-1 dims when ``dim`` is None)."""
    dim = _resolve_dim(dim, axis)
    if dim is None:
        return reshape(x, tuple(s for s in x.shape if s != 1))
    dim = dim % x.ndim
    if x.shape[dim] != 1:
        return x
    return reshape(x, x.shape[:dim] + x.shape[dim + 1:])


def expand(x, *shape):
    """Broadcast to ``shape`` (no copy); the gradient is summed back."""
    xp = B.xp
    shape = _shape_arg(shape)
    shape = tuple(x.shape[i - len(shape) + x.ndim] if s == -1 else s for i, s in enumerate(shape))
    old = x.shape
    return make(xp.broadcast_to(x.data, shape), (x,), lambda g: (_unbroadcast(g, old),), "expand")


def cat(tensors, dim=None, *, axis=None):
    """Concatenate along ``dim`` (default 0); the gradient is cut back into the pieces."""
    xp = B.xp
    tensors = [as_tensor(t) for t in tensors]
    d = _resolve_dim(dim, axis, default=0) % tensors[0].ndim
    sizes = [t.shape[d] for t in tensors]
    out = xp.concat([t.data for t in tensors], axis=d)
    def backward(g):
        pieces, start = [], 0
        for n in sizes:
            index = (slice(None),) * d + (slice(start, start + n),) + (Ellipsis,)
            pieces.append(g[index])
            start += n
        return tuple(pieces)
    return make(out, tuple(tensors), backward, "cat")


concat = cat


def stack(tensors, dim=None, *, axis=None):
    """Stack equal-shaped tensors along a new ``dim`` (default 0)."""
    xp = B.xp
    tensors = [as_tensor(t) for t in tensors]
    d = _resolve_dim(dim, axis, default=0) % (tensors[0].ndim + 1)
    out = xp.stack([t.data for t in tensors], axis=d)
    def backward(g):
        return tuple(g[(slice(None),) * d + (i, Ellipsis)] for i in range(len(tensors)))
    return make(out, tuple(tensors), backward, "stack")


def split(x, split_size_or_sections, dim=None, *, axis=None):
    """PyTorch's ``split``: chunks of equal size (the last one smaller) or the given sizes,
    along ``dim`` (default 0)."""
    dim = _resolve_dim(dim, axis, default=0)
    d = dim % x.ndim
    n = x.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        sizes = [min(step, n - s) for s in range(0, n, step)]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split sizes {sizes} do not add up to {n} along dim {dim}")
    pieces, start = [], 0
    for size in sizes:
        pieces.append(getitem(x, (slice(None),) * d + (slice(start, start + size), Ellipsis)))
        start += size
    return tuple(pieces)


def _normalise_index(idx, ndim):
    """A basic index as a tuple; an Ellipsis is added where the standard needs one."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    for i in idx:
        if not (i is None or i is Ellipsis or isinstance(i, (int, slice))) or isinstance(i, bool):
            raise TypeError("only basic indexing (ints, slices, ..., None) is supported on "
                            f"tensors; got {type(i).__name__}. Use index_select or gather")
    if Ellipsis not in idx and len([i for i in idx if i is not None]) < ndim:
        idx = idx + (Ellipsis,)
    return idx


def getitem_reference(x, idx):
    """``x[idx]`` with a dense gradient: zeros shaped like ``x``, with ``g`` where ``x`` was read."""
    xp = B.xp
    idx = _normalise_index(idx, x.ndim)
    out = x.data[idx]
    plain = tuple(i for i in idx if i is not None)     # the same selection without new axes
    selected_shape = x.data[plain].shape if len(plain) != len(idx) else out.shape
    like, shape = x.data, x.shape
    def backward(g):
        full = B.zeros(shape, like=like)
        full[plain] = xp.reshape(g, selected_shape)
        return (full,)
    return make(out, (x,), backward, "getitem")


@fused(reference=getitem_reference, requires=("accumulate",))
def getitem(x, idx):
    """Basic indexing and slicing: ``x[:, t]``, ``x[..., a:b]``, ``x[None]``. The gradient stays
    sparse (``grad.accumulate.SliceGrad``: the slice and where it goes) until it is summed."""
    xp = B.xp
    idx = _normalise_index(idx, x.ndim)
    out = x.data[idx]
    plain = tuple(i for i in idx if i is not None)     # the same selection without new axes
    selected_shape = x.data[plain].shape if len(plain) != len(idx) else out.shape
    like, shape = x.data, x.shape
    def backward(g):                                   # the gradient lands where x was read
        return (SliceGrad(plain, xp.reshape(g, selected_shape), shape, like),)
    return make(out, (x,), backward, "getitem")


# ============================================================================ gathers, masks
def _index_array(index):
    if isinstance(index, Tensor):
        return index.data
    return B.asarray(index, "int64")


def _required_index(index, op: str):
    if index is None:
        raise TypeError(f"{op}() needs an index")
    return index


def index_select(x, dim=None, index=None, *, axis=None):
    """Entries of ``x`` at the positions ``index`` (1-D) along ``dim``; repeated positions
    accumulate gradient."""
    xp = B.xp
    d = _required_dim(dim, axis, "index_select") % x.ndim
    index = _required_index(index, "index_select")
    idx = _index_array(index)
    out = xp.take(x.data, idx, axis=d)
    shape = x.shape
    def backward(g):
        moved = xp.moveaxis(g, d, 0) if d else g          # (len(idx), ...)
        summed = B.scatter_add(idx, moved, shape[d])      # (shape[d], ...)
        return (xp.moveaxis(summed, 0, d) if d else summed,)
    return make(out, (x,), backward, "index_select")


def _flat_positions(index, dim: int, shape):
    """Linear positions into an array of ``shape`` of ``index`` read along ``dim``."""
    xp = B.xp
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    pos = index * strides[dim]
    for axis, n in enumerate(index.shape):
        if axis == dim:
            continue
        coord = B.arange(n, like=index)
        view_shape = [1] * index.ndim
        view_shape[axis] = n
        pos = pos + xp.reshape(coord, tuple(view_shape)) * strides[axis]
    return pos


def gather(x, dim=None, index=None, *, axis=None):
    """``out[i][j] = x[i][index[i][j]]`` for ``dim=1`` (PyTorch's gather; ``index`` has the shape
    of ``x`` except along ``dim``)."""
    xp = B.xp
    d = _required_dim(dim, axis, "gather") % x.ndim
    index = _required_index(index, "gather")
    idx = _index_array(index)
    out = xp.take_along_axis(x.data, idx, axis=d)
    shape = x.shape
    def backward(g):
        pos = xp.reshape(_flat_positions(idx, d, shape), (-1,))
        total = 1
        for s in shape:
            total *= s
        flat = B.scatter_add(pos, xp.reshape(g, (-1,)), total)
        return (xp.reshape(flat, shape),)
    return make(out, (x,), backward, "gather")


def _mask_array(mask, like):
    m = mask.data if isinstance(mask, Tensor) else B.asarray(mask)
    return m


def where(condition, a, b):
    """``a`` where ``condition`` is true, else ``b`` (numbers or tensors; broadcasting)."""
    xp = B.xp
    like = a if isinstance(a, Tensor) else b
    a, b = as_tensor(a, like), as_tensor(b, like)
    cond = _mask_array(condition, a.data)
    out = xp.where(cond, a.data, b.data)
    sa, sb = a.shape, b.shape
    def backward(g):
        c = xp.astype(cond, g.dtype)
        return (_unbroadcast(g * c, sa) if a.requires_grad else None,
                _unbroadcast(g * (1.0 - c), sb) if b.requires_grad else None)
    return make(out, (a, b), backward, "where")


def masked_fill(x, mask, value: float):
    """``x`` with ``value`` wherever ``mask`` is true; no gradient reaches the filled places."""
    xp = B.xp
    m = _mask_array(mask, x.data)
    out = xp.where(m, B.full((), value, like=x.data), x.data)
    shape = x.shape
    def backward(g):
        return (_unbroadcast(g * (1.0 - xp.astype(m, g.dtype)), shape),)
    return make(out, (x,), backward, "masked_fill")


# ======================================================================= comparisons (no grad)
def _compare(fn):
    def op(a, b):
        other = b.data if isinstance(b, Tensor) else b
        return Tensor(fn(a.data, other))
    return op


# ================================================================== Tensor methods and operators
def _attach():
    T = Tensor
    T.__add__ = add
    T.__radd__ = lambda a, b: add(a, b)
    T.__sub__ = sub
    T.__rsub__ = lambda a, b: rsub(a, b) if _is_number(b) else sub(b, a)
    T.__mul__ = mul
    T.__rmul__ = lambda a, b: mul(a, b)
    T.__truediv__ = div
    T.__rtruediv__ = lambda a, b: rdiv(a, b) if _is_number(b) else div(b, a)
    T.__neg__ = neg
    T.__pow__ = pow
    T.__rpow__ = lambda a, b: rpow(a, b)
    T.__matmul__ = matmul
    T.__rmatmul__ = lambda a, b: matmul(b, a)
    T.__getitem__ = getitem
    T.__lt__ = _compare(lambda x, y: x < y)
    T.__le__ = _compare(lambda x, y: x <= y)
    T.__gt__ = _compare(lambda x, y: x > y)
    T.__ge__ = _compare(lambda x, y: x >= y)
    T.__eq__ = _compare(lambda x, y: x == y)
    T.__ne__ = _compare(lambda x, y: x != y)
    T.__hash__ = object.__hash__
    for name, fn in [("matmul", matmul), ("sum", sum), ("mean", mean), ("amax", amax),
                     ("max", max), ("argmax", argmax), ("topk", topk), ("exp", exp), ("log", log),
                     ("sqrt", sqrt), ("erf", erf), ("tanh", tanh), ("sigmoid", sigmoid),
                     ("relu", relu), ("reshape", reshape), ("view", view), ("permute", permute),
                     ("transpose", transpose), ("unsqueeze", unsqueeze), ("squeeze", squeeze),
                     ("expand", expand), ("split", split), ("index_select", index_select),
                     ("gather", gather), ("masked_fill", masked_fill), ("pow", pow)]:
        setattr(T, name, fn)
    T.to = to
    T.float = lambda x: to(x, "float32")
    T.double = lambda x: to(x, "float64")
    T.T = property(lambda x: transpose(x, -2, -1) if x.ndim >= 2 else x)


_attach()
