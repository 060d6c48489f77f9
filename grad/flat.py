"""One flat buffer for many arrays: gather them into a contiguous 1-D array, scatter it back.

A model's parameters (and their gradients) are a list of arrays of different shapes. Operations
that treat them all alike -- summing gradients across processes with one MPI ``Allreduce``, an
optimiser update written once over every element -- are cheaper on ONE contiguous buffer than on
twenty small ones: one call instead of twenty, and one large message instead of many small ones.
``FlatLayout`` records where each array lives in that buffer::

    shapes   [(4, 3), (4,), (2, 4)]
    sizes    [12, 4, 8]
    offsets  [0, 12, 16]          total 24
    buffer   |------ a0 (12) ------|-- a1 (4) --|---- a2 (8) ----|

``gather(arrays)`` copies the arrays into a new buffer (``None`` entries become zeros: a parameter
that got no gradient contributes nothing to a sum); ``scatter(buffer)`` cuts the buffer back into
arrays of the recorded shapes. On NumPy and CuPy these are views of the buffer (a contiguous slice
reshaped), so writing the buffer is seen through them; array_api_strict may copy.

Everything goes through the backend namespace ``xp`` (``xp.concat``, ``xp.reshape``, slicing), so
the same code runs on NumPy, CuPy and array_api_strict arrays; moving a CuPy buffer through host
memory (for a transport that only reads host memory) is the caller's choice
(``grad.backend.to_numpy`` / ``from_numpy``).
"""
from __future__ import annotations

import math

from . import backend as B


class FlatLayout:
    """Where each of a list of arrays (given by their shapes and one common dtype) sits in one
    contiguous 1-D buffer of ``total`` elements."""

    def __init__(self, shapes, dtype):
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.offsets = []
        at = 0
        for n in self.sizes:
            self.offsets.append(at)
            at += n
        self.total = at
        self.dtype = dtype

    @classmethod
    def of(cls, arrays) -> "FlatLayout":
        """The layout of a list of arrays, which must share one dtype (the buffer has one)."""
        arrays = list(arrays)
        if not arrays:
            raise ValueError("FlatLayout.of needs at least one array")
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            names = ", ".join(sorted(B.dtype_name(d) for d in dtypes))
            raise ValueError(f"a flat buffer holds one dtype; got arrays of {names}")
        return cls([a.shape for a in arrays], arrays[0].dtype)

    def __len__(self) -> int:
        return len(self.shapes)

    def gather(self, arrays):
        """A new contiguous buffer ``(total,)`` holding ``arrays`` in order; ``None`` -> zeros."""
        xp = B.xp
        arrays = list(arrays)
        if len(arrays) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} arrays, got {len(arrays)}")
        like = next((a for a in arrays if a is not None), None)
        pieces = []
        for i, a in enumerate(arrays):
            if a is None:
                if like is None:
                    pieces.append(B.new((self.sizes[i],), 0.0, B.dtype_name(self.dtype)))
                else:
                    pieces.append(B.zeros((self.sizes[i],), like=like))
                continue
            if tuple(a.shape) != self.shapes[i]:
                raise ValueError(f"array {i} has shape {tuple(a.shape)}, the layout says "
                                 f"{self.shapes[i]}")
            if a.dtype != self.dtype:
                a = xp.astype(a, self.dtype)
            pieces.append(xp.reshape(a, (-1,)))                       # (n_i,)
        return xp.concat(pieces)                                       # (total,), a copy

    def scatter(self, buffer) -> list:
        """The arrays of the layout, cut out of ``buffer`` ``(total,)`` (views where the backend
        gives them)."""
        xp = B.xp
        if tuple(buffer.shape) != (self.total,):
            raise ValueError(f"buffer has shape {tuple(buffer.shape)}, the layout needs ({self.total},)")
        return [xp.reshape(buffer[o:o + n], s)
                for o, n, s in zip(self.offsets, self.sizes, self.shapes)]
