"""The encoder: source embedding and a bidirectional LSTM (many-to-one, and many-to-many for
attention).

Each direction has ``hidden_size // 2`` units, so the concatenated output per token is
``hidden_size`` wide, matching the decoder. The forward direction's final state summarises the
sentence read left to right, the reverse direction's read right to left; for each layer the two
are concatenated to initialise the decoder's layer.
"""
from __future__ import annotations

from grad import nn, ops
from grad.tensor import Tensor

from ..data.vocab import PAD


class Encoder(nn.Module):
    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, pad_idx: int = PAD, *, generator=None):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (two directions of hidden_size // 2), got {hidden_size}")
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx, generator=generator)
        self.rnn = nn.LSTM(emb_size, hidden_size // 2, num_layers, batch_first=True,
                           dropout=dropout, bidirectional=True, generator=generator)

    def forward(self, src: Tensor, src_lengths):
        """``src``: ``(B, S)`` token ids; ``src_lengths``: ``(B,)``.

        Returns ``outputs (B, S, H)`` (zero at padding) and ``(h, c)``, each ``(L, B, H)``: per
        layer, the final forward and reverse states concatenated.
        """
        emb = self.embedding(src)                                       # (B, S, E)
        outputs, (h_n, c_n) = self.rnn(emb, lengths=src_lengths)        # (B, S, H), (2L, B, H/2)
        return outputs, (self._merge(h_n), self._merge(c_n))

    def _merge(self, state: Tensor) -> Tensor:
        """``(2L, B, H/2)`` ordered (layer, direction) -> ``(L, B, H)`` with [forward | reverse]."""
        two_l, batch, half = state.shape
        per_layer = ops.reshape(state, (self.num_layers, 2, batch, half))  # (L, 2, B, H/2)
        return ops.reshape(ops.permute(per_layer, (0, 2, 1, 3)),
                           (self.num_layers, batch, 2 * half))             # (L, B, H)
