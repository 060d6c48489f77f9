"""Tensor factories: ``tensor``, ``zeros``, ``ones``, ``full``, ``arange``, ``randn``, ``rand``."""
from __future__ import annotations

from . import backend as B
from .tensor import Tensor


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A leaf tensor from Python data, a NumPy array or a backend array. Python floats become
    float32 (as in PyTorch); arrays keep their dtype unless ``dtype`` is given."""
    if isinstance(data, Tensor):
        data = data.data
    return Tensor(data, requires_grad=requires_grad, dtype=None if dtype is None else B.get_dtype(dtype))


def full(size, fill_value, dtype="float32", requires_grad: bool = False) -> Tensor:
    return Tensor(B.new(tuple(size), fill_value, dtype), requires_grad=requires_grad)


def zeros(*size, dtype="float32", requires_grad: bool = False) -> Tensor:
    return full(_shape(size), 0, dtype, requires_grad)


def ones(*size, dtype="float32", requires_grad: bool = False) -> Tensor:
    return full(_shape(size), 1, dtype, requires_grad)


def zeros_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return Tensor(B.zeros(t.shape, like=t.data), requires_grad=requires_grad)


def ones_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return Tensor(B.full(t.shape, 1, like=t.data), requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype="int64") -> Tensor:
    return Tensor(B.new_arange(start, end, step, dtype))


def randn(*size, generator=None, dtype="float32", requires_grad: bool = False) -> Tensor:
    """Standard normal numbers from ``generator`` (a ``grad.Generator``) or the global one."""
    gen = generator if generator is not None else B.default_generator
    return Tensor(gen.normal(_shape(size), dtype=dtype), requires_grad=requires_grad)


def rand(*size, generator=None, dtype="float32", requires_grad: bool = False) -> Tensor:
    """Uniform numbers in [0, 1) from ``generator`` or the global one."""
    gen = generator if generator is not None else B.default_generator
    return Tensor(gen.uniform(_shape(size), dtype=dtype), requires_grad=requires_grad)
