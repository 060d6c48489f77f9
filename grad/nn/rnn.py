"""``LSTMCell`` and ``LSTM`` with ``torch.nn.LSTM``'s signature, shapes and parameter layout.

Parameters of layer ``k`` (``_reverse`` added for the backward direction)::

    weight_ih_l{k}  (4H, in_k)     in_0 = input_size, in_k = H * num_directions after that
    weight_hh_l{k}  (4H, H)
    bias_ih_l{k}    (4H,)
    bias_hh_l{k}    (4H,)

with the four gate blocks stacked in the order i, f, g, o. All are initialised uniformly in
``[-1/sqrt(H), 1/sqrt(H)]`` (PyTorch's default).

The layer computes the input's share of the gates for *all* time steps with one matrix product
and runs only ``h @ W_hh^T`` inside the time loop: one fused node per layer and direction
(``grad.functional.lstm_layer``); under ``grad.reference_mode()`` its readable twin, one
``lstm_step`` node per time step.
"""
from __future__ import annotations

import math

from .. import backend as B
from .. import functional as F
from .. import ops
from ..tensor import Tensor
from .module import Module, Parameter


class LSTMCell(Module):
    """One LSTM step: ``(x (B, in), (h, c) (B, H) each) -> (h', c')``; parameters ``weight_ih``
    ``(4H, in)``, ``weight_hh`` ``(4H, H)``, ``bias_ih``, ``bias_hh`` ``(4H,)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, generator=None,
                 dtype="float32"):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        gen = generator if generator is not None else B.default_generator
        k = 1.0 / math.sqrt(hidden_size)
        self.weight_ih = Parameter(gen.uniform((4 * hidden_size, input_size), -k, k, dtype))
        self.weight_hh = Parameter(gen.uniform((4 * hidden_size, hidden_size), -k, k, dtype))
        self.bias_ih = Parameter(gen.uniform((4 * hidden_size,), -k, k, dtype)) if bias else None
        self.bias_hh = Parameter(gen.uniform((4 * hidden_size,), -k, k, dtype)) if bias else None

    def forward(self, x, hx=None):
        if hx is None:
            zeros = Tensor(B.zeros((x.shape[0], self.hidden_size), like=x.data))
            hx = (zeros, zeros)
        return F.lstm_cell(x, hx[0], hx[1], self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class LSTM(Module):
    """A multi-layer, optionally bidirectional LSTM (``torch.nn.LSTM``'s signature).

    ``forward(x, hx=None, lengths=None) -> (output, (h_n, c_n))``

    * ``x``: ``(B, T, in)`` if ``batch_first`` else ``(T, B, in)``
    * ``hx``: optional ``(h_0, c_0)``, each ``(num_layers * num_directions, B, H)``
    * ``lengths``: optional ``(B,)`` true lengths of padded sequences (our replacement for packed
      sequences): states stop at each sequence's last real token, the reverse direction starts
      there, outputs at padding positions are zero, and ``h_n``/``c_n`` are the states at the
      true end.
    * ``output``: ``(B, T, H * num_directions)`` (or time-major); ``h_n``, ``c_n``:
      ``(num_layers * num_directions, B, H)``, ordered layer by layer, forward before reverse.

    ``dropout`` is applied to the outputs of every layer except the last, drawing from
    ``generator`` (or the global generator).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 generator=None, dtype="float32"):
        super().__init__()
        if input_size <= 0 or hidden_size <= 0 or num_layers <= 0:
            raise ValueError("LSTM sizes must be positive, got input_size="
                             f"{input_size}, hidden_size={hidden_size}, num_layers={num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.generator = generator
        gen = generator if generator is not None else B.default_generator
        k = 1.0 / math.sqrt(hidden_size)
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                name = f"l{layer}{suffix}"
                setattr(self, f"weight_ih_{name}", Parameter(gen.uniform((4 * hidden_size, n_in), -k, k, dtype)))
                setattr(self, f"weight_hh_{name}", Parameter(gen.uniform((4 * hidden_size, hidden_size), -k, k, dtype)))
                if bias:
                    setattr(self, f"bias_ih_{name}", Parameter(gen.uniform((4 * hidden_size,), -k, k, dtype)))
                    setattr(self, f"bias_hh_{name}", Parameter(gen.uniform((4 * hidden_size,), -k, k, dtype)))

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def layer_weights(self, k: int, reverse: bool = False):
        """The parameters of layer ``k`` (its reverse direction with ``reverse=True``):
        ``(w_ih (4H, in_k), w_hh (4H, H), b_ih (4H,), b_hh (4H,))``, the biases None without
        ``bias``. The tensors themselves, not copies: gradients reach the parameters."""
        if not 0 <= k < self.num_layers:
            raise IndexError(f"layer {k} out of range for an LSTM of {self.num_layers} layer(s)")
        if reverse and not self.bidirectional:
            raise ValueError("reverse=True needs a bidirectional LSTM")
        name = f"l{k}{'_reverse' if reverse else ''}"
        w_ih, w_hh = getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}")
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, f"bias_ih_{name}"), getattr(self, f"bias_hh_{name}")

    def cell(self, k: int, x_t: Tensor, state, reverse: bool = False):
        """One time step of layer ``k``: ``x_t`` ``(B, in_k)`` and ``state = (h, c)`` ``(B, H)``
        each -> the new ``(h, c)``. The same step ``forward`` takes at every position (without
        dropout, which ``forward`` applies between layers)::

            h, c = lstm.cell(0, x[:, t], (h, c))     # layer 0, time step t

        Runs ``grad.functional.lstm_cell`` with this layer's weights."""
        w_ih, w_hh, b_ih, b_hh = self.layer_weights(k, reverse)
        h, c = state
        return F.lstm_cell(x_t, h, c, w_ih, w_hh, b_ih, b_hh)                 # (B, H) each

    def _weights(self, layer: int, suffix: str):
        """``(w_ih, w_hh, b_ih + b_hh)``: the layer's input projection with one summed bias."""
        w_ih, w_hh, b_ih, b_hh = self.layer_weights(layer, suffix == "_reverse")
        return w_ih, w_hh, (None if b_ih is None else b_ih + b_hh)

    def forward(self, x, hx=None, lengths=None):
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"LSTM expects input of shape ({'B, T' if self.batch_first else 'T, B'}, "
                             f"{self.input_size}), got {x.shape}")
        if x.shape[1 if self.batch_first else 0] == 0:
            raise ValueError(f"LSTM expects at least one time step, got input of shape {x.shape}")
        if self.batch_first:
            x = ops.permute(x, (1, 0, 2))                                  # (T, B, in)
        n_steps, batch, n_hidden = x.shape[0], x.shape[1], self.hidden_size
        masks = None
        if lengths is not None:
            masks = self._step_masks(lengths, n_steps, batch, x)            # (T, B, 1)
        n_states = self.num_layers * self.num_directions
        if hx is not None:
            h0, c0 = hx
            expected = (n_states, batch, n_hidden)
            if h0.shape != expected or c0.shape != expected:
                raise ValueError(f"hx must be two tensors of shape {expected}, got {h0.shape} and {c0.shape}")

        h_n, c_n = [], []
        layer_input = x                                                     # (T, B, in_k)
        for layer in range(self.num_layers):
            direction_outputs = []
            for d, suffix in enumerate(self._suffixes()):
                w_ih, w_hh, bias = self._weights(layer, suffix)
                x_gates = F.linear(layer_input, w_ih, bias)                 # (T, B, 4H) in one GEMM
                k = layer * self.num_directions + d
                if hx is None:
                    state = Tensor(B.zeros((batch, 2 * n_hidden), like=x_gates.data))
                else:
                    state = ops.cat([hx[0][k], hx[1][k]], dim=1)            # (B, 2H) = [h | c]
                hc = F.lstm_layer(x_gates, state, w_hh, masks, reverse=bool(suffix))  # (2, T, B, H)
                last = 0 if suffix else n_steps - 1                         # where the sweep ends
                h_n.append(hc[0, last])                                     # (B, H)
                c_n.append(hc[1, last])
                out = hc[0]                                                 # (T, B, H)
                if masks is not None:
                    out = out * Tensor(masks)                               # zero at padding
                direction_outputs.append(out)
            layer_input = direction_outputs[0] if len(direction_outputs) == 1 \
                else ops.cat(direction_outputs, dim=2)                      # (T, B, H * D)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, True, self.generator)
        output = layer_input
        if self.batch_first:
            output = ops.permute(output, (1, 0, 2))                         # (B, T, H * D)
        return output, (ops.stack(h_n, dim=0), ops.stack(c_n, dim=0))

    @staticmethod
    def _step_masks(lengths, n_steps, batch, like):
        xp = B.xp
        lens = lengths.data if isinstance(lengths, Tensor) else B.asarray(lengths, "int64")
        if tuple(lens.shape) != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lens.shape)}")
        host = B.to_numpy(lens)
        if host.min() < 0 or host.max() > n_steps:
            raise ValueError(f"lengths must be in [0, {n_steps}], got min {host.min()} max {host.max()}")
        steps = B.arange(n_steps, like=lens, dtype=lens.dtype)
        valid = steps[:, None] < lens[None, :]                              # (T, B)
        return xp.reshape(xp.astype(valid, like.dtype), (n_steps, batch, 1))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s
