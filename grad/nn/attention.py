"""``MultiheadAttention`` with ``torch.nn.MultiheadAttention``'s parameters, forward signature and
mask conventions.

Parameters::

    in_proj_weight   (3E, E)   the query, key and value projections stacked: rows [0, E) for the
                               query, [E, 2E) for the key, [2E, 3E) for the value
    in_proj_bias     (3E,)
    out_proj.weight  (E, E)    out_proj is a Linear
    out_proj.bias    (E,)

Initialisation (PyTorch's): ``in_proj_weight`` Xavier-uniform, ``out_proj.weight`` as any Linear,
both biases zero.

The attention itself is ``grad.functional.scaled_dot_product_attention`` on ``(B, heads, T, d)``
with ``d = E / heads``; this module projects, splits the heads, translates the masks from this
module's convention to that function's, and merges the heads again. When the keys are the values
and no weights are asked for (the Transformer's layers), the packed projections go to
``grad.functional.multi_head_attention`` instead: the same math (its reference is exactly the
split / attend / merge above), without the copies and sparse gradients of the split.
"""
from __future__ import annotations

import math

from .. import backend as B
from .. import functional as F
from .. import ops
from ..tensor import Tensor
from .layers import Linear, _generator
from .module import Module, Parameter


def _as_tensor(mask) -> Tensor:
    return mask if isinstance(mask, Tensor) else Tensor(B.asarray(mask))


class MultiheadAttention(Module):
    """Multi-head attention: ``forward(query, key, value, key_padding_mask=None,
    need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False)
    -> (output, weights)``.

    * ``query`` ``(B, T, E)``, ``key`` and ``value`` ``(B, S, E)`` (``(T, B, E)``, ``(S, B, E)``
      with ``batch_first=False``). Note the default ``batch_first=True``, the layout of minis2s;
      PyTorch's default is False.
    * Masks, PyTorch's convention for this module (the opposite of
      ``scaled_dot_product_attention``'s bool convention): a bool mask is True where a position is
      MASKED; a float mask is added to the scores. ``key_padding_mask`` ``(B, S)``: keys to ignore
      (padding). ``attn_mask`` ``(T, S)`` or ``(B * heads, T, S)``. When both are given they are
      combined (bool: either masks; float: the sum, a bool one counting as ``-inf``).
      ``is_causal=True`` without ``attn_mask`` applies the causal mask (query ``i`` sees keys
      ``j <= i``; PyTorch raises there); with ``attn_mask`` it is only a hint and the mask is used.
    * ``weights``: ``(B, T, S)`` averaged over the heads, or ``(B, heads, T, S)`` with
      ``average_attn_weights=False``; after dropout, with gradient (as PyTorch's); None with
      ``need_weights=False``.
    * A fully masked query row attends to nothing: its weights are zero and its attention output
      is zero before ``out_proj`` (so ``out_proj.bias`` after it); PyTorch gives NaN there.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = True, *, generator=None, dtype="float32"):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be a positive "
                             f"multiple of num_heads ({num_heads})")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout, self.batch_first, self.generator = float(dropout), batch_first, generator
        bound = math.sqrt(6.0 / (embed_dim + 3 * embed_dim))          # Xavier: fan_in E, fan_out 3E
        gen = _generator(generator)
        self.in_proj_weight = Parameter(gen.uniform((3 * embed_dim, embed_dim), -bound, bound, dtype))
        self.in_proj_bias = Parameter(B.new((3 * embed_dim,), 0.0, dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, generator=generator, dtype=dtype)
        if bias:
            self.out_proj.bias.data = B.new((embed_dim,), 0.0, dtype)

    # ------------------------------------------------------------------------------ forward
    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True, is_causal: bool = False):
        if not self.batch_first:                     # (T, B, E) -> (B, T, E), keeping "key is value"
            q_in = ops.transpose(query, 0, 1)
            k_in = q_in if key is query else ops.transpose(key, 0, 1)
            v_in = k_in if value is key else q_in if value is query else ops.transpose(value, 0, 1)
            query, key, value = q_in, k_in, v_in
        n_batch, n_q, n_k = self._check_shapes(query, key, value)
        mask = self._mask(attn_mask, key_padding_mask, is_causal, n_batch, n_q, n_k)
        dropout_p = self.dropout if self.training else 0.0
        if key is value and not need_weights:          # self- or cross-attention: packed heads
            out, weights = self._packed_attention(query, key, mask, dropout_p), None  # (B, T, E)
        else:
            q, k, v = self._project(query, key, value)                  # (B, T|S, E)
            q, k, v = (self._split_heads(t) for t in (q, k, v))         # (B, h, T|S, d)
            result = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, generator=self.generator,
                need_weights=need_weights)
            out, weights = result if need_weights else (result, None)   # (B, h, T, d), (B, h, T, S)
            out = ops.reshape(ops.permute(out, (0, 2, 1, 3)), (n_batch, n_q, self.embed_dim))
        out = self.out_proj(out)                                         # (B, T, E)
        if not self.batch_first:
            out = ops.transpose(out, 0, 1)                               # (T, B, E)
        if weights is not None and average_attn_weights:
            weights = ops.mean(weights, dim=1)                           # (B, T, S)
        return out, weights

    def _check_shapes(self, query, key, value):
        e = self.embed_dim
        if query.ndim != 3 or key.ndim != 3 or value.ndim != 3:
            raise ValueError("MultiheadAttention: query, key and value must be 3-D "
                             f"({'(B, T, E)' if self.batch_first else '(T, B, E)'}), got "
                             f"{query.shape}, {key.shape} and {value.shape} (as batch-first)")
        if query.shape[2] != e or key.shape[2] != e or value.shape[2] != e:
            raise ValueError(f"MultiheadAttention: the last dim of query, key and value must be "
                             f"embed_dim={e}, got {query.shape}, {key.shape} and {value.shape}")
        if not query.shape[0] == key.shape[0] == value.shape[0] or key.shape[1] != value.shape[1]:
            raise ValueError("MultiheadAttention: query, key and value need the same batch size "
                             f"and key and value the same length, got {query.shape}, {key.shape} "
                             f"and {value.shape} (as batch-first)")
        return query.shape[0], query.shape[1], key.shape[1]

    def _project(self, query, key, value):
        """``x W^T + b`` with the query's, key's and value's blocks of ``in_proj_weight``: one
        product for all three in self-attention, one for key and value when they are the same."""
        e, w, b = self.embed_dim, self.in_proj_weight, self.in_proj_bias

        def rows(i, j):                                  # blocks i..j-1 of the weight and bias
            return w[i * e:j * e], (None if b is None else b[i * e:j * e])
        if query is key and key is value:
            return ops.split(F.linear(query, w, b), e, dim=-1)          # 3 x (B, T, E)
        q = F.linear(query, *rows(0, 1))
        if key is value:
            k, v = ops.split(F.linear(key, *rows(1, 3)), e, dim=-1)
        else:
            k, v = F.linear(key, *rows(1, 2)), F.linear(value, *rows(2, 3))
        return q, k, v

    def _packed_attention(self, query, key, mask, dropout_p):
        """Attention without its weights when the keys are the values: the projections made
        by one product (queries, keys and values in self-attention; keys and values in
        cross-attention) go to ``grad.functional.multi_head_attention`` as they are, packed,
        and come back with the heads merged ``(B, T, E)``."""
        e, w, b = self.embed_dim, self.in_proj_weight, self.in_proj_bias
        kw = dict(attn_mask=mask, dropout_p=dropout_p, generator=self.generator)
        if query is key:
            return F.multi_head_attention(F.linear(query, w, b), None, self.num_heads, **kw)
        q = F.linear(query, w[:e], None if b is None else b[:e])                # (B, T, E)
        kv = F.linear(key, w[e:], None if b is None else b[e:])                 # (B, S, 2E)
        return F.multi_head_attention(q, kv, self.num_heads, **kw)

    def _split_heads(self, x):
        n_batch, n_steps, _ = x.shape                                    # (B, L, E)
        x = ops.reshape(x, (n_batch, n_steps, self.num_heads, self.head_dim))
        return ops.permute(x, (0, 2, 1, 3))                              # (B, h, L, d)

    def _mask(self, attn_mask, key_padding_mask, is_causal, n_batch, n_q, n_k):
        """This module's masks (True = masked, float = added) as one mask for
        ``scaled_dot_product_attention`` (True = may attend, float = added), broadcastable to
        ``(B, h, T, S)``; None when there is none."""
        xp = B.xp
        if is_causal and attn_mask is None:
            steps = B.new_arange(max(n_q, n_k))
            attn_mask = Tensor(steps[None, :n_k] > steps[:n_q, None])    # (T, S) True above the diagonal
        parts = []
        if attn_mask is not None:
            m = _as_tensor(attn_mask)
            if m.shape == (n_batch * self.num_heads, n_q, n_k):
                m = ops.reshape(m, (n_batch, self.num_heads, n_q, n_k))
            elif m.shape != (n_q, n_k):
                raise ValueError(f"MultiheadAttention: attn_mask must be ({n_q}, {n_k}) or "
                                 f"({n_batch * self.num_heads}, {n_q}, {n_k}), got {m.shape}")
            parts.append(m)
        if key_padding_mask is not None:
            m = _as_tensor(key_padding_mask)
            if m.shape != (n_batch, n_k):
                raise ValueError(f"MultiheadAttention: key_padding_mask must be ({n_batch}, "
                                 f"{n_k}), got {m.shape}")
            parts.append(ops.reshape(m, (n_batch, 1, 1, n_k)))
        for m in parts:
            if m.dtype != xp.bool and not B.is_floating(m.dtype):
                raise TypeError(f"MultiheadAttention: masks must be bool (True = masked) or "
                                f"floating (added to the scores), got {m.dtype}")
        if not parts:
            return None
        if all(m.dtype == xp.bool for m in parts):
            masked = parts[0].data if len(parts) == 1 else xp.logical_or(parts[0].data, parts[1].data)
            return Tensor(xp.logical_not(masked))                        # True = may attend
        total = None
        for m in parts:
            if m.dtype == xp.bool:                                       # True -> -inf, False -> 0
                m = Tensor(xp.where(m.data, B.full((), -math.inf, like=self.in_proj_weight.data),
                                    B.full((), 0.0, like=self.in_proj_weight.data)))
            total = m if total is None else total + m
        return total

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}")
