"""The decoder: a conditional language model over the target, with attention and input feeding.

At step t the decoder reads the previous target token ``y_{t-1}`` and, with *input feeding*, the
previous attentional state ``h~_{t-1}`` (``h~_0 = 0``), so that it knows what it attended to
last time::

    x_t = [emb(y_{t-1}); h~_{t-1}]               (B, E + H)
    h_t = LSTM(x_t, state_{t-1})                  (B, H)   top layer
    h~_t, a_t = attention(h_t, H_src)             (B, H), (B, S)
    logits_t = W_out h~_t + b                     (B, V)   the "generator", once for all t

The LSTM's parameters keep ``torch.nn.LSTM(E + H, H, L)``'s layout. For speed the layer-0 input
weight is used in two halves, ``W_ih = [W_emb | W_feed]``: ``W_ih x_t = W_emb emb(y_{t-1}) +
W_feed h~_{t-1}``. The first half does not depend on the loop, so under teacher forcing it is
computed for all steps with one matrix product; no concatenation is made at any step.
"""
from __future__ import annotations

from grad import backend as B
from grad import functional as F
from grad import nn, ops
from grad.tensor import Tensor

from .attention import LuongAttention


class Decoder(nn.Module):
    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, pad_idx: int = 0, attention: str | None = "general",
                 input_feeding: bool = True, *, generator=None):
        super().__init__()
        self.vocab_size, self.emb_size, self.hidden_size = vocab_size, emb_size, hidden_size
        self.num_layers, self.dropout, self.input_feeding = num_layers, dropout, input_feeding
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx, generator=generator)
        feed = hidden_size if input_feeding else 0
        self.rnn = nn.LSTM(emb_size + feed, hidden_size, num_layers, batch_first=True,
                           dropout=dropout, generator=generator)
        self.attention = LuongAttention(hidden_size, attention, generator=generator) \
            if attention is not None else None
        self.output_layer = nn.Linear(hidden_size, vocab_size, generator=generator)  # the generator
        self.dropout_generator = generator

    # ------------------------------------------------------------------ pieces used by both paths
    def weights(self):
        """Per-batch views of the weights: layer 0's input weight split into its embedding and
        feed halves, the summed biases, and the split attention-combine weight."""
        rnn, e = self.rnn, self.emb_size
        layers = []
        for k in range(self.num_layers):
            w_ih, w_hh, bias = rnn._weights(k, "")
            layers.append((w_ih, w_hh, bias))
        w_ih0 = layers[0][0]
        w_emb = w_ih0[:, :e]                                               # (4H, E)
        w_feed = w_ih0[:, e:] if self.input_feeding else None              # (4H, H)
        combine = self.attention.split_combine() if self.attention is not None else None
        return {"layers": layers, "w_emb": w_emb, "w_feed": w_feed, "combine": combine}

    def _stack(self, gates0: Tensor, states: list, w) -> Tensor:
        """Run the LSTM layers for one step; ``gates0`` is layer 0's input share ``(B, 4H)``.
        Updates ``states`` (packed ``[h | c]`` per layer) in place; returns the top ``h``."""
        n = self.hidden_size
        layers = w["layers"]
        states[0] = F.lstm_step(gates0, states[0], layers[0][1])          # (B, 2H)
        h = states[0][:, :n]
        for k in range(1, self.num_layers):
            h = F.dropout(h, self.dropout, self.training, self.dropout_generator)
            w_ih, w_hh, bias = layers[k]
            states[k] = F.lstm_step(F.linear(h, w_ih, bias), states[k], w_hh)
            h = states[k][:, :n]
        return h                                                           # (B, H)

    def _drop(self, x: Tensor) -> Tensor:
        """Dropout on the attentional states before the generator (training only), so that a
        one-layer model is regularised too."""
        return F.dropout(x, self.dropout, self.training, self.dropout_generator)

    def _attend(self, h: Tensor, memory, pad_mask, w):
        if self.attention is None:
            return h, None
        return self.attention(h, memory, pad_mask, combine=w["combine"])

    def _feed_gates(self, gates, feed, w):
        if self.input_feeding:
            return gates + F.linear(feed, w["w_feed"])                    # (B, 4H)
        return gates

    @staticmethod
    def init_states(h: Tensor, c: Tensor) -> list:
        """Encoder finals ``(L, B, H)`` each -> a list of packed ``[h | c]`` states ``(B, 2H)``."""
        return [ops.cat([h[k], c[k]], dim=1) for k in range(h.shape[0])]

    # ------------------------------------------------------------------ training path
    def forward(self, tgt_in: Tensor, states: list, memory: Tensor, pad_mask, tf_ratio: float = 1.0,
                generator=None, return_attention: bool = False):
        """Teacher-forced decoding of ``tgt_in`` ``(B, T)`` (BOS y_1 ... y_{T-1}).

        With ``tf_ratio < 1``, at each step t >= 1 each sequence feeds its own previous argmax
        instead of the reference with probability ``1 - tf_ratio`` (drawn from ``generator``);
        no gradient flows through that choice. The argmax is over the vocabulary without PAD and
        BOS (never fed, as in greedy search), so ``tf_ratio=0`` in eval mode feeds exactly the
        tokens greedy decoding would choose.

        Returns ``logits (B, T, V)`` and the attention weights ``(B, T, S)`` (or None).
        """
        batch, n_steps = tgt_in.shape
        w = self.weights()
        bias0 = w["layers"][0][2]
        emb = self.embedding(tgt_in)                                       # (B, T, E)
        # The embedding half of layer 0's input projection, for all steps in one GEMM.
        gates_emb = F.linear(ops.permute(emb, (1, 0, 2)), w["w_emb"], bias0)  # (T, B, 4H)
        feed = Tensor(B.zeros((batch, self.hidden_size), like=memory.data))  # h~_0 = 0
        h_tildes, attentions, step_logits = [], [], []
        sampling = tf_ratio < 1.0
        gen = generator if generator is not None else B.default_generator
        for t in range(n_steps):
            gates = gates_emb[t]                                           # (B, 4H)
            if sampling and t > 0:
                gates = self._sampled_gates(tgt_in[:, t], step_logits[-1], tf_ratio, gen, w, bias0)
            h = self._stack(self._feed_gates(gates, feed, w), states, w)   # (B, H)
            h_tilde, a = self._attend(h, memory, pad_mask, w)              # (B, H), (B, S)
            feed = h_tilde
            h_tildes.append(h_tilde)
            if a is not None:
                attentions.append(a)
            if sampling:
                step_logits.append(self.output_layer(self._drop(h_tilde)))  # (B, V)
        if sampling:
            logits = ops.stack(step_logits, dim=1)                         # (B, T, V)
        else:
            logits = self.output_layer(self._drop(ops.stack(h_tildes, dim=1)))  # (B, T, V), one GEMM
        attention = ops.stack(attentions, dim=1) if attentions else None   # (B, T, S)
        return logits, attention

    def _sampled_gates(self, reference, prev_logits, tf_ratio, gen, w, bias0):
        """Layer 0's embedding share for a step where some sequences use their own prediction."""
        xp = B.xp
        logits = prev_logits.data                                         # (B, V)
        ids = B.arange(logits.shape[1], like=logits)
        banned = (ids == self.embedding.padding_idx) | (ids == 1)         # never feed PAD or BOS
        logits = xp.where(banned[None, :], B.full((), float("-inf"), like=logits), logits)
        predicted = xp.argmax(logits, axis=1)                             # (B,) no gradient
        use_model = gen.bernoulli((reference.shape[0],), 1.0 - tf_ratio, dtype="float32")
        chosen = xp.where(use_model > 0.5, predicted, reference.data)     # (B,)
        return F.linear(self.embedding(Tensor(chosen)), w["w_emb"], bias0)  # (B, 4H)

    # ------------------------------------------------------------------ inference path
    def step(self, y_prev: Tensor, feed: Tensor, states: list, memory: Tensor, pad_mask, w):
        """One decoding step on the model's own previous tokens ``y_prev`` ``(N,)``.
        Returns ``(log_probs (N, V), h_tilde (N, H), attention (N, S) or None)``; updates
        ``states`` in place."""
        bias0 = w["layers"][0][2]
        gates = F.linear(self.embedding(y_prev), w["w_emb"], bias0)       # (N, 4H)
        h = self._stack(self._feed_gates(gates, feed, w), states, w)
        h_tilde, a = self._attend(h, memory, pad_mask, w)
        return F.log_softmax(self.output_layer(h_tilde), dim=-1), h_tilde, a
