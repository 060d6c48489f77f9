"""Transformer layers with ``torch.nn``'s names, signatures and parameter layouts:
``TransformerEncoderLayer``, ``TransformerDecoderLayer``, the stacks ``TransformerEncoder`` and
``TransformerDecoder``, and ``PositionalEncoding`` (sinusoidal, or learned).

An encoder layer, post-norm (the default, as in "Attention is all you need") or pre-norm
(``norm_first=True``)::

    post-norm:  x = norm1(x + SA(x))          pre-norm:  x = x + SA(norm1(x))
                x = norm2(x + FF(x))                     x = x + FF(norm2(x))

with ``SA(x) = dropout1(self_attn(x, x, x))`` and
``FF(x) = dropout2(linear2(dropout(activation(linear1(x)))))``.
A decoder layer adds cross-attention on the encoder's output (the ``memory``) between the two:
``MHA(x) = dropout2(multihead_attn(x, memory, memory))``, with ``norm2`` before or after it and the
feed-forward block moved to ``norm3`` / ``dropout3``. Parameter names (``self_attn.in_proj_weight``,
``linear1.weight``, ``norm1.bias``, ...; ``layers.0.`` in a stack) are PyTorch's, so a PyTorch
state dict loads as it is.
"""
from __future__ import annotations

import copy
import math

from .. import backend as B
from .. import functional as F
from .. import ops
from ..tensor import Tensor
from .attention import MultiheadAttention
from .layers import Dropout, LayerNorm, Linear, _generator
from .module import Module, ModuleList, Parameter

_ACTIVATIONS = {"relu": ops.relu, "gelu": F.gelu}


def _activation(activation):
    if callable(activation):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be 'relu', 'gelu' or a callable, got {activation!r}")
    return _ACTIVATIONS[activation]


def generate_square_subsequent_mask(size: int, dtype="float32") -> Tensor:
    """The causal mask of ``torch.nn.Transformer.generate_square_subsequent_mask``: ``(size,
    size)``, 0 on and below the diagonal and ``-inf`` above it (position i may not look at later
    positions), for ``tgt_mask`` / ``attn_mask``."""
    steps = B.new_arange(size)
    later = steps[None, :] > steps[:, None]                              # (size, size)
    zero = B.new((), 0.0, dtype)
    return Tensor(B.xp.where(later, B.new((), -math.inf, dtype), zero))


class TransformerEncoderLayer(Module):
    """Self-attention and a feed-forward block, each with a residual connection and a LayerNorm
    (``torch.nn.TransformerEncoderLayer``).

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``: ``src``
    ``(B, T, d_model)`` (``(T, B, d_model)`` with ``batch_first=False``; the default here is True,
    PyTorch's is False); the masks follow ``MultiheadAttention`` (bool True = masked, float =
    added). ``activation``: ``"relu"``, ``"gelu"`` or a callable on tensors.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = True,
                 norm_first: bool = False, bias: bool = True, *, generator=None, dtype="float32"):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, generator=generator, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, generator=generator, dtype=dtype)
        self.dropout = Dropout(dropout, generator=generator)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, generator=generator, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout, generator=generator)
        self.dropout2 = Dropout(dropout, generator=generator)
        self.activation = _activation(activation)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerDecoderLayer(Module):
    """Masked self-attention, cross-attention on the encoder's output and a feed-forward block,
    each with a residual connection and a LayerNorm (``torch.nn.TransformerDecoderLayer``).

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``: ``tgt``
    ``(B, T, d_model)``, ``memory`` ``(B, S, d_model)`` (sequence first with
    ``batch_first=False``). For auto-regressive decoding pass a causal ``tgt_mask``
    (``generate_square_subsequent_mask``) or ``tgt_is_causal=True``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = True,
                 norm_first: bool = False, bias: bool = True, *, generator=None, dtype="float32"):
        super().__init__()
        kw = dict(dropout=dropout, bias=bias, batch_first=batch_first, generator=generator, dtype=dtype)
        self.self_attn = MultiheadAttention(d_model, nhead, **kw)
        self.multihead_attn = MultiheadAttention(d_model, nhead, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, generator=generator, dtype=dtype)
        self.dropout = Dropout(dropout, generator=generator)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, generator=generator, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout, generator=generator)
        self.dropout2 = Dropout(dropout, generator=generator)
        self.dropout3 = Dropout(dropout, generator=generator)
        self.activation = _activation(activation)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False):
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask,
                                    memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask,
                                               memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _mha_block(self, x, memory, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(x, memory, memory, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, need_weights=False,
                                is_causal=is_causal)[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))


def _clones(module: Module, n: int) -> ModuleList:
    """``n`` independent deep copies of ``module`` (as PyTorch's stacks make), with fresh
    Parameter objects; random generators are shared, not copied (a copy would make every layer
    draw the same dropout masks)."""
    memo = {}
    for m in module.modules():
        for value in vars(m).values():
            if isinstance(value, B.Generator):
                memo[id(value)] = value
    layers = ModuleList()
    for _ in range(n):
        clone = copy.deepcopy(module, dict(memo))
        for m in clone.modules():
            for name, p in list(m._parameters.items()):
                setattr(m, name, Parameter(p.data, requires_grad=p.requires_grad))
        layers.append(clone)
    return layers


class TransformerEncoder(Module):
    """``num_layers`` copies of ``encoder_layer`` (``layers.0``, ``layers.1``, ...) applied in turn,
    then the optional final ``norm`` (``torch.nn.TransformerEncoder``; ``torch.nn.Transformer``
    gives its encoder a final LayerNorm, which pre-norm layers need).

    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=False)``.
    """

    def __init__(self, encoder_layer: Module, num_layers: int, norm: Module | None = None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"TransformerEncoder: num_layers must be at least 1, got {num_layers}")
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=is_causal)
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(Module):
    """``num_layers`` copies of ``decoder_layer`` applied in turn, each reading the same
    ``memory``, then the optional final ``norm`` (``torch.nn.TransformerDecoder``).

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``.
    """

    def __init__(self, decoder_layer: Module, num_layers: int, norm: Module | None = None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"TransformerDecoder: num_layers must be at least 1, got {num_layers}")
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False):
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        return x if self.norm is None else self.norm(x)


# ======================================================================= positional encoding
def sinusoidal_encoding(n_positions: int, d_model: int, dtype="float32") -> Tensor:
    """The sinusoidal position table of "Attention is all you need", ``(n_positions, d_model)``::

        PE[pos, 2i]     = sin(pos / 10000^(2i / d_model))
        PE[pos, 2i + 1] = cos(pos / 10000^(2i / d_model))

    Each pair of columns is a rotation at its own frequency, so the table at ``pos + k`` is a fixed
    linear function of the table at ``pos``: relative offsets are easy to read off."""
    xp = B.xp
    pos = xp.astype(B.new_arange(n_positions), B.get_dtype(dtype))         # (P,)
    col = B.new_arange(d_model)                                           # (E,)
    pair = xp.astype(col - col % 2, B.get_dtype(dtype))                   # 2i for both columns of a pair
    freq = xp.exp(pair * (-math.log(10000.0) / d_model))                 # 10000^(-2i / E)
    angle = pos[:, None] * freq[None, :]                                  # (P, E)
    return Tensor(xp.where(col % 2 == 0, xp.sin(angle), xp.cos(angle)))


class PositionalEncoding(Module):
    """Adds position information to a sequence of embeddings: ``dropout(x + PE[:T])``.

    ``x``: ``(B, T, d_model)`` (``(T, B, d_model)`` with ``batch_first=False``). By default ``PE``
    is ``sinusoidal_encoding`` (no parameters, any length); with ``learned=True`` it is a parameter
    ``weight`` ``(max_len, d_model)``, initialised normal with standard deviation 0.02, and
    sequences may be at most ``max_len`` long. (PyTorch has no such module; its tutorials write
    this one.) Scaling the embeddings by ``sqrt(d_model)`` first is the model's choice.
    """

    def __init__(self, d_model: int, dropout: float = 0.0, max_len: int = 5000, *,
                 learned: bool = False, batch_first: bool = True, generator=None,
                 dtype="float32"):
        super().__init__()
        if d_model <= 0 or max_len <= 0:
            raise ValueError(f"PositionalEncoding: d_model and max_len must be positive, got "
                             f"{d_model} and {max_len}")
        self.d_model, self.max_len, self.learned = d_model, max_len, learned
        self.batch_first = batch_first
        self.dropout = Dropout(dropout, generator=generator)
        if learned:
            self.weight = Parameter(_generator(generator).normal((max_len, d_model), 0.0, 0.02, dtype))

    def forward(self, x):
        n_steps = x.shape[1] if self.batch_first else x.shape[0]
        if x.ndim != 3 or x.shape[2] != self.d_model:
            raise ValueError(f"PositionalEncoding: expected (B, T, {self.d_model}) input "
                             f"({'batch first' if self.batch_first else 'sequence first'}), "
                             f"got {x.shape}")
        if self.learned:
            if n_steps > self.max_len:
                raise ValueError(f"PositionalEncoding: sequence of length {n_steps} is longer "
                                 f"than max_len={self.max_len}")
            table = self.weight[:n_steps]                                 # (T, E)
        else:
            table = sinusoidal_encoding(n_steps, self.d_model, B.dtype_name(x.dtype))
        table = table if self.batch_first else ops.unsqueeze(table, 1)    # (T, E) or (T, 1, E)
        return self.dropout(x + table)

    def extra_repr(self) -> str:
        return f"{self.d_model}, max_len={self.max_len}, learned={self.learned}"
