"""The encoder: source embedding and a bidirectional LSTM (many-to-one, and many-to-many for
attention).

Each direction has ``hidden_size // 2`` units, so the concatenated output per token is
``hidden_size`` wide, matching the decoder. The forward direction's final state summarises the
sentence read left to right, the reverse direction's read right to left; for each layer the two
are concatenated to initialise the decoder's layer.
"""
from __future__ import annotations

import numpy as np

from grad import backend as B
from grad import nn, ops
from grad.modes import fused
from grad.tensor import Tensor, is_grad_enabled

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
        if is_grad_enabled() or (self.training and self.rnn.dropout > 0.0):
            outputs, (h_n, c_n) = self.rnn(emb, lengths=src_lengths)    # (B, S, H), (2L, B, H/2)
        else:                              # inference (search): no graph, padding skipped
            outputs, (h_n, c_n) = encoder_lstm(self.rnn, emb, src_lengths)
        return outputs, (self._merge(h_n), self._merge(c_n))

    def _merge(self, state: Tensor) -> Tensor:
        """``(2L, B, H/2)`` ordered (layer, direction) -> ``(L, B, H)`` with [forward | reverse]."""
        two_l, batch, half = state.shape
        per_layer = ops.reshape(state, (self.num_layers, 2, batch, half))  # (L, 2, B, H/2)
        return ops.reshape(ops.permute(per_layer, (0, 2, 1, 3)),
                           (self.num_layers, batch, 2 * half))             # (L, B, H)


# ---------------------------------------------------------------------- the inference encoder
def encoder_lstm_reference(rnn: nn.LSTM, emb: Tensor, lengths):
    """The encoder's LSTM as training runs it (``nn.LSTM`` with ``lengths``, batch first): the
    readable twin of ``encoder_lstm``. Returns ``outputs (B, S, H * D)`` (zero at padding) and
    ``(h_n, c_n)``, each ``(L * D, B, H)``."""
    return rnn(emb, lengths=lengths)


@fused(reference=encoder_lstm_reference)
def encoder_lstm(rnn: nn.LSTM, emb: Tensor, lengths):
    """The same LSTM for inference (no gradient, no dropout), on raw arrays, computing only the
    real tokens, as PyTorch's packed sequences do (the reference computes every row at every
    step and keeps the old state on padding). The rows are sorted by length, longest first, so
    that at time t the rows still inside their sentence are the first ``n_t``; the tokens are
    *packed* time step after time step (``n_0`` rows of t = 0, then ``n_1`` of t = 1, ...), and
    every layer reads and writes that packed ``(N, features)`` layout, ``N`` the number of real
    tokens. Per layer and direction: the input's share of the gates is ONE product over the
    ``N`` packed tokens; the step multiplies the first ``n_t`` states by ``W_hh^T``, laid out
    once as a contiguous ``(H, 4H)`` matrix. As in ``decoder_step``, the sigmoid gates' columns
    of both weights (and the bias) are halved, exactly, so one ``tanh`` gives all four gates.
    Same results as ``encoder_lstm_reference`` (to rounding)."""
    xp = B.xp
    batch, n_steps, _ = emb.shape
    n = rnn.hidden_size
    lens = lengths.data if isinstance(lengths, Tensor) else B.asarray(lengths, "int64")
    host = B.to_numpy(lens)
    if tuple(host.shape) != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(host.shape)}")
    if host.min() < 0 or host.max() > n_steps:
        raise ValueError(f"lengths must be in [0, {n_steps}], got min {host.min()} "
                         f"max {host.max()}")
    # The packing, on the host: token (row b, time t) <-> packed index offsets[t] + (b's rank).
    order = np.argsort(-host, kind="stable")                              # longest first
    active = [int((host > t).sum()) for t in range(n_steps)]              # n_t, non-increasing
    offsets = np.concatenate([[0], np.cumsum(active)])                    # (T + 1,)
    total = int(offsets[-1])                                              # N real tokens
    pack = np.concatenate([order[:m] * n_steps + t for t, m in enumerate(active)])  # (N,)
    unpack = np.full(batch * n_steps, total)                              # padding -> a zero row
    unpack[pack] = np.arange(total)                                       # (B * T,)
    x = xp.take(xp.reshape(emb.data, (batch * n_steps, emb.shape[2])),
                B.asarray(pack, "int64"), axis=0)                         # (N, E) packed
    ones = B.full((n,), 1.0, like=x)
    half = xp.concat([ones * 0.5, ones * 0.5, ones, ones * 0.5])          # (4H,) i f g o
    h_n, c_n = [], []
    for layer in range(rnn.num_layers):
        outputs = []
        for reverse in ((False, True) if rnn.bidirectional else (False,)):
            w_ih, w_hh, b_ih, b_hh = rnn.layer_weights(layer, reverse)
            gates = xp.matmul(x, xp.matrix_transpose(w_ih.data) * half)   # (N, 4H), z/2 on i f o
            if b_ih is not None:
                gates += (b_ih.data + b_hh.data) * half
            w = B.contiguous(xp.matrix_transpose(w_hh.data) * half)       # (H, 4H)
            h = B.zeros((batch, n), like=x)                               # sorted rows
            c = B.zeros((batch, n), like=x)
            out = B.zeros((total, n), like=x)                             # (N, H) packed
            for t in (range(n_steps - 1, -1, -1) if reverse else range(n_steps)):
                m, o = active[t], int(offsets[t])
                if m == 0:
                    continue
                z = xp.matmul(h[:m, :], w)                                # (m, 4H), fresh
                z += gates[o:o + m, :]
                tz = xp.tanh(z)               # tanh(z_i/2), tanh(z_f/2), tanh(z_g), tanh(z_o/2)
                sig = tz * 0.5
                sig += 0.5                    # sigmoid on the i, f, o blocks
                c_new = sig[:, n:2 * n] * c[:m, :]
                c_new += sig[:, :n] * tz[:, 2 * n:3 * n]                  # c' = f c + i g
                h_new = sig[:, 3 * n:] * xp.tanh(c_new)                   # h' = o tanh(c')
                h[:m, :] = h_new
                c[:m, :] = c_new
                out[o:o + m, :] = h_new
            h_n.append(h)
            c_n.append(c)
            outputs.append(out)
        x = outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=1)  # (N, H * D)
    width = x.shape[1]
    padded = xp.concat([x, B.zeros((1, width), like=x)], axis=0)          # (N + 1, H * D)
    output = xp.reshape(xp.take(padded, B.asarray(unpack, "int64"), axis=0),
                        (batch, n_steps, width))                # (B, T, H * D), 0 at padding
    back = B.asarray(np.argsort(order), "int64")                          # sorted -> given order
    return Tensor(output), (Tensor(xp.take(xp.stack(h_n), back, axis=1)),   # (L * D, B, H)
                            Tensor(xp.take(xp.stack(c_n), back, axis=1)))
