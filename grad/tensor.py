"""``Tensor``: an array that remembers how it was made, and ``backward()`` that walks that record.

Every op (see ``grad/ops.py``) computes its result array and, when gradients are wanted, returns
a tensor holding

* ``_parents``  -- the input tensors that need a gradient, and
* ``_backward`` -- a function from the gradient of the output to the gradients of those inputs,

written a few lines below the forward computation it differentiates. ``backward()`` then visits
the graph from the output towards the leaves in reverse topological order, calling each
``_backward`` exactly once, after all the gradient flowing into that node has been summed
(``grad/accumulate.py`` sums it), and frees each node's saved arrays once it has run.
"""
from __future__ import annotations

import heapq
import itertools

from . import backend as B
from .accumulate import accumulate

_grad_enabled = True
_counter = itertools.count()   # creation order: a deterministic tie-break for the backward heap


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
    ``backward`` on leaves that require grad), ``requires_grad``; and the graph record a picture
    needs: ``_op`` (the op's name, "" on a leaf), ``_parents`` (its inputs) and ``shape``.
    Operators and the methods that are ops (``x + y``, ``x.sum()``, ``x.to("float64")``, ...)
    are attached by ``grad/ops.py``, which defines them.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_gen", "_seq", "_op",
                 "_flat", "__weakref__")   # _flat: its flat buffer, see grad/flat.py
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


def run_backward(root: Tensor, root_grad, retain_graph: bool = False) -> None:
    """Reverse-mode sweep from ``root``: the gradient of ``root`` with respect to every tensor
    that led to it, stored in the ``.grad`` of the leaves.

    A node may run its ``_backward`` only once every consumer has sent its gradient. Every
    consumer of a node has a larger generation than the node itself, so popping nodes from a heap
    keyed by ``(-generation, -creation order)`` visits consumers first. The heap makes the order
    deterministic and costs O(log n) per node (re-sorting a list on each insert would be quadratic
    on a long unrolled RNN). How the gradients a node received are summed is
    ``grad.accumulate.accumulate``'s business; under ``grad.reference_mode()`` a plain sum.
    """
    received = {id(root): [root_grad]}      # the gradients sent to each node not yet visited
    heap = [(-root._gen, -root._seq, root)]
    while heap:
        _, _, node = heapq.heappop(heap)
        g = accumulate(received.pop(id(node)), node)                 # (node.shape) their sum
        if node.is_leaf:
            node.grad = g if node.grad is None else node.grad + g    # summed across backward()s
            continue
        for parent, parent_grad in zip(node._parents, node._backward(g)):
            if parent_grad is None or not parent.requires_grad:
                continue
            if id(parent) not in received:                           # the first one sent to it
                received[id(parent)] = []
                heapq.heappush(heap, (-parent._gen, -parent._seq, parent))
            received[id(parent)].append(parent_grad)
        if not retain_graph:              # free what backward saved: its arrays, its inputs
            node._backward, node._parents = _freed, ()


def _freed(g):
    """The ``_backward`` of a node whose backward already ran in a sweep that freed the graph."""
    raise RuntimeError("backward through a graph a second time: its buffers were freed; "
                       "pass retain_graph=True to the first backward()")


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
