"""The basic layers: ``Linear``, ``Embedding``, ``Dropout``, ``LayerNorm``, with PyTorch's layouts
and default initialisations (documented on each class)."""
from __future__ import annotations

import math

from .. import backend as B
from .. import functional as F
from .module import Module, Parameter


def _generator(generator):
    return generator if generator is not None else B.default_generator


class Linear(Module):
    """``y = x W^T + b`` with ``weight`` ``(out_features, in_features)`` and ``bias``
    ``(out_features,)``.

    Initialisation (PyTorch's default): weight and bias uniform in ``[-k, k]``, ``k = 1/sqrt(in)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, generator=None,
                 dtype="float32"):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear sizes must be positive, got ({in_features}, {out_features})")
        self.in_features, self.out_features = in_features, out_features
        gen = _generator(generator)
        k = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(gen.uniform((out_features, in_features), -k, k, dtype))
        self.bias = Parameter(gen.uniform((out_features,), -k, k, dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table ``weight`` ``(num_embeddings, embedding_dim)``: ids ``(...)`` -> ``(..., E)``.

    Initialisation (PyTorch's default): standard normal; the ``padding_idx`` row is zero and
    receives no gradient.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 generator=None, dtype="float32"):
        super().__init__()
        if num_embeddings <= 0 or embedding_dim <= 0:
            raise ValueError(f"Embedding sizes must be positive, got ({num_embeddings}, {embedding_dim})")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx {padding_idx} out of range for {num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        w = _generator(generator).normal((num_embeddings, embedding_dim), dtype=dtype)
        if padding_idx is not None:
            w[padding_idx, :] = 0.0
        self.weight = Parameter(w)

    def forward(self, ids):
        return F.embedding(ids, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Dropout(Module):
    """Inverted dropout with probability ``p``, active in ``train()`` mode only. Draws from the
    ``generator`` it is given, else the global one."""

    def __init__(self, p: float = 0.5, *, generator=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerNorm(Module):
    """Layer normalisation over the last dims, ``normalized_shape`` (an int or a tuple):
    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` (``grad.functional.layer_norm``).

    Parameters (PyTorch's): ``weight`` (ones) and ``bias`` (zeros), both ``normalized_shape``;
    none with ``elementwise_affine=False``, no ``bias`` with ``bias=False``.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, *, dtype="float32"):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or any(int(s) <= 0 for s in shape):
            raise ValueError("LayerNorm: normalized_shape must be positive sizes, "
                             f"got {normalized_shape!r}")
        if not eps > 0:
            raise ValueError(f"LayerNorm: eps must be positive, got {eps}")
        self.normalized_shape, self.eps = shape, float(eps)
        self.elementwise_affine = elementwise_affine
        self.weight = Parameter(B.new(shape, 1.0, dtype)) if elementwise_affine else None
        self.bias = Parameter(B.new(shape, 0.0, dtype)) if elementwise_affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
