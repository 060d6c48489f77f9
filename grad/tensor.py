"""``Tensor``: an array that remembers how it was made, and ``backward()`` that walks that record.

Every op (see ``grad/ops.py``) computes its result array and, when gradients are wanted, returns
a tensor holding

* ``_parents``  -- the input tensors that need a gradient, and
* ``_backward`` -- a function from the gradient of the output to the gradients of those inputs,

written a few lines below the forward computation it differentiates. ``backward()`` then visits
the graph from the output towards the leaves in reverse topological order, calling each
``_backward`` exactly once, after all the gradient flowing into that node has been summed.
"""
from __future__ import annotations

import heapq
import itertools

from . import backend as B

_grad_enabled = True
_counter = itertools.count()   # creation order: a deterministic tie-break for the backward heap
_sweep_frees_graph = False     # True only inside a backward sweep that frees the graph


class no_grad:
    """Context manager (and decorator) in which ops record no graph: for inference and updates."""

    def __enter__(self):
        global _grad_enabled
        self._prev, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc_info):
        global _grad_enabled
        _grad_enabled = self._prev
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


class enable_grad(no_grad):
    """Context manager that turns graph recording back on inside a ``no_grad`` block."""

    def __enter__(self):
        global _grad_enabled
        self._prev, _grad_enabled = _grad_enabled, True


def is_grad_enabled() -> bool:
    return _grad_enabled


class Tensor:
    """A backend array plus what autograd needs to differentiate through it.

    Attributes: ``data`` (the backend array), ``grad`` (a backend array or None, filled by
    ``backward`` on leaves that require grad), ``requires_grad``.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_gen", "_seq", "_op",
                 "__weakref__")
    _is_parameter = False

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = B.asarray(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        if self.requires_grad and not B.is_floating(self.data.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        self._parents = ()
        self._backward = None
        self._gen = 0            # 1 + the largest generation among the parents (leaves: 0)
        self._seq = next(_counter)
        self._op = ""

    # ---------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def device(self):
        return getattr(self.data, "device", None)

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __len__(self) -> int:
        return self.shape[0]

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise RuntimeError(f"the truth value of a tensor with {self.numel()} elements is "
                               "ambiguous; use .all(), .any() or compare .item()")
        return bool(self.item())

    def __repr__(self) -> str:
        extra = f", grad_fn=<{self._op}>" if self._op else (", requires_grad=True" if self.requires_grad else "")
        return f"tensor({B.to_numpy(self.data)!r}{extra})"

    # ---------------------------------------------------------------- conversions
    def numpy(self):
        """A host NumPy copy (or view, on the numpy backend) of the data; never part of a graph."""
        return B.to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, target) -> "Tensor":
        """Convert to a dtype (``"float64"``, ``grad.float64``) or move to a backend
        (``"numpy"``, ``"cupy"``, ``"array_api_strict"``: the array is copied through the host into
        the namespace that is active after ``grad.backend.use(...)``). Differentiable for dtypes."""
        if isinstance(target, str) and target in B.BACKENDS:
            with B.use(target):
                return Tensor(B.from_numpy(self.numpy()), requires_grad=self.requires_grad)
        from .ops import astype
        return astype(self, B.get_dtype(target))

    def float(self) -> "Tensor":
        return self.to("float32")

    def double(self) -> "Tensor":
        return self.to("float64")

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        self.requires_grad = flag
        return self

    # ---------------------------------------------------------------- autograd
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into the ``.grad`` of every leaf that requires grad.

        ``gradient`` is the cotangent: required for a non-scalar tensor, 1 for a scalar.
        The graph is freed afterwards unless ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation had requires_grad=True)")
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(f"backward() on a non-scalar tensor of shape {self.shape} needs "
                                   "an explicit gradient of the same shape")
            g = B.full(self.data.shape, 1.0, like=self.data)
        else:
            g = gradient.data if isinstance(gradient, Tensor) else B.asarray(gradient, self.dtype)
            if tuple(g.shape) != self.shape:
                raise ValueError(f"gradient shape {tuple(g.shape)} does not match tensor shape {self.shape}")
        run_backward(self, g, retain_graph)


def saved_arrays_are_free() -> bool:
    """Whether the backward sweep now running frees the graph after it (``retain_graph=False``),
    so that an op's backward may reuse the arrays it saved as its output buffers. False outside
    a sweep (a backward function called by hand must not destroy what it saved)."""
    return _sweep_frees_graph


def run_backward(root: Tensor, root_grad, retain_graph: bool = False) -> None:
    """Reverse-mode sweep from ``root``.

    A node may only run its ``_backward`` once every consumer has sent its contribution. Every
    consumer of a node has a larger generation than the node itself, so popping nodes from a heap
    keyed by ``(-generation, -creation order)`` visits consumers first. The heap makes the order
    deterministic and costs O(log n) per node (re-sorting a list on each insert would be quadratic
    on a long unrolled RNN). Gradients of intermediate nodes are dropped as soon as they are used.
    """
    global _sweep_frees_graph
    outer, _sweep_frees_graph = _sweep_frees_graph, not retain_graph
    try:
        _sweep(root, root_grad, retain_graph)
    finally:
        _sweep_frees_graph = outer          # a backward run inside another restores its flag


def _sweep(root: Tensor, root_grad, retain_graph: bool) -> None:
    grads = {id(root): root_grad}       # pending gradients of nodes not yet processed
    owned = set()                       # keys whose pending gradient is a buffer we made
    handed_out = set()                  # ids of arrays stored in a leaf's .grad by this sweep
    heap = [(-root._gen, -root._seq, root)]
    queued = {id(root)}
    while heap:
        _, _, node = heapq.heappop(heap)
        g = grads.pop(id(node))
        if isinstance(g, (SliceGrad, Factored)):
            g = g.dense()
            if g.dtype != node.data.dtype:               # mixed dtypes: the tensor's own dtype
                g = B.xp.astype(g, node.data.dtype)
        if node._backward is None:                       # a leaf: accumulate out of place
            if node.grad is not None:
                node.grad = node.grad + g
            elif id(g) in handed_out:                    # never let two leaves share one array
                node.grad = B.xp.asarray(g, copy=True)
            else:
                node.grad = g
            handed_out.add(id(node.grad))
            continue
        if node._backward is _FREED:
            raise RuntimeError("backward through a graph a second time: its buffers were freed; "
                               "pass retain_graph=True to the first backward()")
        parent_grads = node._backward(g)
        for parent, pg in zip(node._parents, parent_grads):
            if pg is None or not parent.requires_grad:
                continue
            if not isinstance(pg, (SliceGrad, Factored)) and pg.dtype != parent.data.dtype:
                pg = B.xp.astype(pg, parent.data.dtype)   # mixed dtypes: the input's own dtype
            key = id(parent)
            if key not in grads:
                grads[key] = pg
            elif isinstance(pg, Factored) and type(pg) is type(grads[key]):
                grads[key] = grads[key].merge(pg)       # still factored: no arithmetic yet
            else:
                # A tensor used more than once gets every contribution. The first time, the sum
                # goes into a fresh buffer that belongs to this sweep (never into an array an op
                # returned, which may be shared); later contributions are added into it in place,
                # so that the T slices x[t] of a sequence cost O(T), not O(T^2).
                if key not in owned:
                    grads[key] = _fresh_buffer(grads[key])
                    owned.add(key)
                _add_into(grads[key], pg)
            if key not in queued:
                queued.add(key)
                heapq.heappush(heap, (-parent._gen, -parent._seq, parent))
        if not retain_graph:
            node._backward = _FREED
            node._parents = ()


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


def _fresh_buffer(g):
    if isinstance(g, (SliceGrad, Factored)):
        return g.dense()
    return B.xp.asarray(g, copy=True)


def _add_into(buffer, g) -> None:
    if isinstance(g, SliceGrad):
        buffer[g.index] = buffer[g.index] + g.value
    elif isinstance(g, Factored):
        buffer += g.dense()
    else:
        buffer += g


def _FREED(g):  # marker: this node's backward already ran and its saved arrays were released
    raise AssertionError("unreachable")


def make(data, parents: tuple, backward, op: str) -> Tensor:
    """Wrap an op's result. Records the graph only if grad mode is on and an input needs grad.

    ``backward(g)`` must return one gradient (or None) per entry of ``parents``, each with the
    shape of that parent.
    """
    out = Tensor.__new__(Tensor)
    out.data = data
    out.grad = None
    out._seq = next(_counter)
    out._op = ""
    if _grad_enabled and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out._parents = parents
        out._backward = backward
        out._gen = 1 + max(p._gen for p in parents)
        out._op = op
    else:
        out.requires_grad = False
        out._parents = ()
        out._backward = None
        out._gen = 0
    return out


def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """Tensors pass through; Python numbers become constants with the dtype of ``like``."""
    if isinstance(x, Tensor):
        return x
    if like is not None and isinstance(x, (int, float, bool)):
        return Tensor(B.full((), x, like=like.data))
    return Tensor(x)
