"""The decoder: a conditional language model over the target, with attention and input feeding.

At step t the decoder reads the previous target token ``y_{t-1}`` and, with *input feeding*, the
previous attentional state ``h~_{t-1}`` (``h~_0 = 0``), so that it knows what it attended to
last time::

    x_t = [emb(y_{t-1}); h~_{t-1}]               (B, E + H)   input feeding: a concatenation
    h_t = LSTM(x_t, state_{t-1})                  (B, H)       top layer
    h~_t, a_t = attention(h_t, H_src)             (B, H), (B, S)
    logits_t = W_out h~_t + b                     (B, V)       the "generator", once for all t

``Decoder.forward`` (teacher forcing) and ``Decoder.step`` (search) run the same step body,
``Decoder.decode``. The LSTM is an ordinary ``nn.LSTM(E + H, H, L)`` stepped through its public
step API (``layer_weights(k)``, ``cell(k, x_t, (h, c))``).

Two ways to run the step, with the same numbers (tested equal in float64):

* **readable** (``grad.reference_mode()``, ``minis2s train --reference``): exactly the lines
  above: ``x_t = cat([emb(y_{t-1}), h~_{t-1}])`` and ``rnn.cell(k, x_t, (h, c))`` per layer.
* **fast** (the default): layer 0's input weight is used in two halves, ``W_ih = [W_emb |
  W_feed]``, so that ``W_ih x_t = W_emb emb(y_{t-1}) + W_feed h~_{t-1}``. The first half does
  not depend on the loop, so under teacher forcing it is computed for all steps with one matrix
  product; no concatenation is made at any step, and each layer's step is one fused
  ``lstm_step`` node on a packed ``[h | c]`` state.
"""
from __future__ import annotations

from grad import backend as B
from grad import functional as F
from grad import nn, ops
from grad.modes import fused, is_reference_mode
from grad.tensor import Tensor, is_grad_enabled

from ..data.vocab import BOS, PAD
from ..decoding import forbid
from .attention import LuongAttention


class Decoder(nn.Module):
    def __init__(self, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, pad_idx: int = PAD, attention: str | None = "general",
                 input_feeding: bool = True, *, generator=None, bos_idx: int = BOS):
        super().__init__()
        self.vocab_size, self.emb_size, self.hidden_size = vocab_size, emb_size, hidden_size
        self.num_layers, self.dropout, self.input_feeding = num_layers, dropout, input_feeding
        self.pad_idx, self.bos_idx = pad_idx, bos_idx
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx, generator=generator)
        feed = hidden_size if input_feeding else 0
        self.rnn = nn.LSTM(emb_size + feed, hidden_size, num_layers, batch_first=True,
                           dropout=dropout, generator=generator)
        self.attention = LuongAttention(hidden_size, attention, generator=generator) \
            if attention is not None else None
        self.output_layer = nn.Linear(hidden_size, vocab_size, generator=generator)  # the generator
        self.dropout_generator = generator

    # ------------------------------------------------------------------ the step body
    def decode(self, emb_t: Tensor, feed: Tensor, states: list, memory: Tensor, pad_mask, w,
               gates_emb_t: Tensor | None = None):
        """ONE decoder step, the body of both ``forward`` and ``step``.

        ``emb_t``: ``emb(y_{t-1})`` ``(B, E)`` (None on the fast path when ``gates_emb_t`` is
        given); ``feed``: ``h~_{t-1}`` ``(B, H)``; ``states``: one
        packed ``[h | c]`` ``(B, 2H)`` per layer, replaced in place by the new ones; ``memory``
        ``(B, S, H)`` and ``pad_mask`` ``(B, S)`` from the encoder; ``w``: ``self.weights()``.
        ``gates_emb_t`` (fast path only): layer 0's embedding share ``W_emb emb_t + b``
        ``(B, 4H)`` when ``forward`` computed it for all steps at once.
        Returns ``(h~_t (B, H), attention weights (B, S) or None)``.
        """
        if is_reference_mode():
            h = self._lstm_readable(emb_t, feed, states)                   # (B, H)
        else:
            h = self._lstm_fast(emb_t, feed, states, w, gates_emb_t)       # (B, H)
        if self.attention is None:
            return h, None
        return self.attention(h, memory, pad_mask, combine=w["combine"])   # (B, H), (B, S)

    def _lstm_readable(self, emb_t, feed, states) -> Tensor:
        """Input feeding as a concatenation, then ``nn.LSTM.cell`` layer by layer."""
        n = self.hidden_size
        x = ops.cat([emb_t, feed], dim=1) if self.input_feeding else emb_t  # (B, E + H)
        for k in range(self.num_layers):
            if k > 0:
                x = F.dropout(x, self.dropout, self.training, self.dropout_generator)
            h, c = self.rnn.cell(k, x, (states[k][:, :n], states[k][:, n:]))  # (B, H) each
            states[k] = ops.cat([h, c], dim=1)                             # (B, 2H) packed
            x = h
        return x                                                           # (B, H) top layer

    def _lstm_fast(self, emb_t, feed, states, w, gates_emb_t) -> Tensor:
        """The same layers with layer 0's input weight split (no concatenation) and one fused
        ``lstm_step`` node per layer."""
        n = self.hidden_size
        gates = gates_emb_t if gates_emb_t is not None else F.linear(emb_t, w["w_emb"], w["bias0"])
        if self.input_feeding:
            gates = gates + F.linear(feed, w["w_feed"])                   # (B, 4H)
        layers = w["layers"]
        states[0] = F.lstm_step(gates, states[0], layers[0][1])           # (B, 2H)
        h = states[0][:, :n]
        for k in range(1, self.num_layers):
            h = F.dropout(h, self.dropout, self.training, self.dropout_generator)
            w_ih, w_hh, bias = layers[k]
            states[k] = F.lstm_step(F.linear(h, w_ih, bias), states[k], w_hh)
            h = states[k][:, :n]
        return h                                                           # (B, H)

    def weights(self):
        """Per-batch views of the weights for the fast path: layer 0's input weight split into
        its embedding and feed halves, each layer's summed bias, and the split attention-combine
        weight (the readable path uses the parameters as they are)."""
        e = self.emb_size
        layers = []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.rnn.layer_weights(k)
            layers.append((w_ih, w_hh, None if b_ih is None else b_ih + b_hh))
        w_ih0 = layers[0][0]
        w_emb = w_ih0[:, :e]                                               # (4H, E)
        w_feed = w_ih0[:, e:] if self.input_feeding else None              # (4H, H)
        combine = None
        if self.attention is not None and not is_reference_mode():
            combine = self.attention.split_combine()
        return {"layers": layers, "w_emb": w_emb, "w_feed": w_feed, "bias0": layers[0][2],
                "combine": combine}

    def _drop(self, x: Tensor) -> Tensor:
        """Dropout on the attentional states before the generator (training only), so that a
        one-layer model is regularised too."""
        return F.dropout(x, self.dropout, self.training, self.dropout_generator)

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
        states = list(states)
        w = self.weights()
        emb = self.embedding(tgt_in)                                       # (B, T, E)
        gates_emb = None
        if not is_reference_mode():   # fast path: the embedding half for all steps in one GEMM
            gates_emb = F.linear(ops.permute(emb, (1, 0, 2)), w["w_emb"], w["bias0"])  # (T, B, 4H)
        feed = Tensor(B.zeros((batch, self.hidden_size), like=memory.data))  # h~_0 = 0
        h_tildes, attentions, step_logits = [], [], []
        sampling = tf_ratio < 1.0
        gen = generator if generator is not None else B.default_generator
        for t in range(n_steps):
            if sampling and t > 0:    # some rows feed their own previous prediction
                emb_t = self._sampled_embedding(tgt_in[:, t], step_logits[-1], tf_ratio, gen)
                gates_t = None
            elif gates_emb is not None:                                    # fast path
                emb_t, gates_t = None, gates_emb[t]                        # (B, 4H) precomputed
            else:
                emb_t, gates_t = emb[:, t], None                           # (B, E) emb(y_{t-1})
            feed, a = self.decode(emb_t, feed, states, memory, pad_mask, w, gates_t)  # (B, H)
            h_tildes.append(feed)
            if a is not None:
                attentions.append(a)
            if sampling:
                step_logits.append(self.output_layer(self._drop(feed)))    # (B, V)
        if sampling:
            logits = ops.stack(step_logits, dim=1)                         # (B, T, V)
        else:
            logits = self.output_layer(self._drop(ops.stack(h_tildes, dim=1)))  # (B, T, V), one GEMM
        attention = ops.stack(attentions, dim=1) if attentions else None   # (B, T, S)
        return logits, attention

    def _sampled_embedding(self, reference, prev_logits, tf_ratio, gen) -> Tensor:
        """``emb(y_{t-1})`` for a step where some sequences feed their own prediction."""
        xp = B.xp
        logits = forbid(prev_logits.data, (self.pad_idx, self.bos_idx))   # never feed PAD or BOS
        predicted = xp.argmax(logits, axis=1)                             # (B,) no gradient
        use_model = gen.bernoulli((reference.shape[0],), 1.0 - tf_ratio, dtype="float32")
        chosen = xp.where(use_model > 0.5, predicted, reference.data)     # (B,)
        return self.embedding(Tensor(chosen))                             # (B, E)

    # ------------------------------------------------------------------ inference path
    def step(self, y_prev: Tensor, feed: Tensor, states: list, memory: Tensor, pad_mask, w=None):
        """One decoding step on the model's own previous tokens ``y_prev`` ``(N,)``.
        Returns ``(log_probs (N, V), h_tilde (N, H), attention (N, S) or None)``; updates
        ``states`` in place. ``w``: ``self.weights()`` (made here when not given; pass the same
        dict at every step of a batch, so that the inference step lays its weights out once).

        Without gradients (``no_grad``, as search runs it) and without dropout, the step is
        ``decoder_step``, which computes on raw arrays and builds no graph nodes; with
        gradients (or dropout) it is ``decoder_step_reference``, the step training runs."""
        w = w if w is not None else self.weights()
        if is_grad_enabled() or (self.training and self.dropout > 0.0):
            return decoder_step_reference(self, y_prev, feed, states, memory, pad_mask, w)
        return decoder_step(self, y_prev, feed, states, memory, pad_mask, w)

    def inference_weights(self) -> dict:
        """The weights laid out for ``decoder_step`` (inference), as raw arrays copied once per
        batch: every product's weight is one contiguous ``(in, out)`` matrix (a plain matrix
        product is faster than one with a transposed operand at these sizes), and each LSTM
        layer's two weights are stacked so that its gates are ONE product:

        * ``layers[k] = (W_k, b_k)``: ``W_k = [W_ih | W_hh]^T`` ``(in_k + H, 4H)``, the gates
          being ``[x | h] W_k + b_k`` (layer 0: ``x = [emb(y_{t-1}) | h~_{t-1}]``), and
          ``b_k = b_ih + b_hh``. The columns of the sigmoid gates i, f, o (not g) are halved,
          exactly (a power of two), so that the product gives ``z / 2`` there and one ``tanh``
          over all four blocks gives every gate: ``sigmoid(z) = (1 + tanh(z / 2)) / 2``, the
          identity ``lstm_step`` uses;
        * ``query``: ``W_a^T`` ``(H, H)`` (None for dot attention); ``combine``: ``W_c^T``
          ``(2H, H)``; ``out``, ``out_bias``: the generator's ``W_out^T`` ``(H, V)`` and ``b``;
        * ``embedding``: the embedding table ``(V, E)`` itself (rows are gathered, not copied).
        """
        xp = B.xp
        n = self.hidden_size
        layers = []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.rnn.layer_weights(k)
            ones = B.full((n,), 1.0, like=w_hh.data)
            half = xp.concat([ones * 0.5, ones * 0.5, ones, ones * 0.5])       # (4H,) i f g o
            w_k = xp.concat([w_ih.data, w_hh.data], axis=1)                 # (4H, in_k + H)
            w_k *= half[:, None]
            b_k = None if b_ih is None else (b_ih.data + b_hh.data) * half   # (4H,)
            layers.append((B.contiguous(xp.matrix_transpose(w_k)), b_k))    # (in_k + H, 4H)
        att = self.attention
        out = self.output_layer
        return {"layers": layers, "embedding": self.embedding.weight.data,
                "query": None if att is None or att.query is None
                else B.contiguous(xp.matrix_transpose(att.query.weight.data)),   # (H, H)
                "combine": None if att is None
                else B.contiguous(xp.matrix_transpose(att.combine.weight.data)),  # (2H, H)
                "out": B.contiguous(xp.matrix_transpose(out.weight.data)),         # (H, V)
                "out_bias": None if out.bias is None else out.bias.data}          # (V,)


# ---------------------------------------------------------------------- the inference step
def decoder_step_reference(decoder: Decoder, y_prev: Tensor, feed: Tensor, states: list,
                           memory: Tensor, pad_mask, w: dict):
    """One decoder step as training runs it (``Decoder.decode``, then the generator and
    ``log_softmax``): the readable twin of ``decoder_step``. Returns ``(log_probs (N, V),
    h~_t (N, H), attention (N, S) or None)`` and replaces ``states`` in place."""
    h_tilde, a = decoder.decode(decoder.embedding(y_prev), feed, states, memory, pad_mask, w)
    return F.log_softmax(decoder.output_layer(h_tilde), dim=-1), h_tilde, a


@fused(reference=decoder_step_reference)
def decoder_step(decoder: Decoder, y_prev: Tensor, feed: Tensor, states: list, memory: Tensor,
                 pad_mask, w: dict):
    """The same step for inference (no gradient, no dropout) on raw arrays: no graph node, no
    per-op bookkeeping, and five matrix products (one per LSTM layer, the attention query, the
    combination, the generator) on the weights of ``Decoder.inference_weights()``, laid out
    once per batch and kept in ``w`` (under ``"inference"``). Same math, same results (to
    rounding: the gates are summed in one product instead of two or three)::

        x = [emb(y_{t-1}) | h~_{t-1}]                       (N, E + H)
        per layer k: z/2 = [x | h] W_k + b_k                 (N, 4H) i, f, o halved
                     t = tanh(z/2); sigmoid = (1 + t) / 2
                     c' = f * c + i * g;  h' = o * tanh(c');  x = h'
        q = h' W_a^T; a = softmax(mem q, -inf at padding); context = a^T mem
        h~ = tanh([h' | context] W_c^T);  log_probs = log_softmax(h~ W_out^T + b)
    """
    xp = B.xp
    p = w.get("inference")
    if p is None:                                   # first step of the batch: lay the weights out
        p = w["inference"] = decoder.inference_weights()
    n = decoder.hidden_size
    x = xp.take(p["embedding"], y_prev.data, axis=0)                      # (N, E) emb(y_{t-1})
    if decoder.input_feeding:
        x = xp.concat([x, feed.data], axis=1)                             # (N, E + H)
    for k, (w_k, b_k) in enumerate(p["layers"]):
        s = states[k].data                                                # (N, 2H) [h | c]
        z = xp.matmul(xp.concat([x, s[:, :n]], axis=1), w_k)              # (N, 4H), fresh
        if b_k is not None:
            z += b_k
        t = xp.tanh(z)                     # tanh(z_i/2), tanh(z_f/2), tanh(z_g), tanh(z_o/2)
        sig = t * 0.5
        sig += 0.5                                    # sigmoid on the i, f, o blocks
        c = sig[:, n:2 * n] * s[:, n:]
        c += sig[:, :n] * t[:, 2 * n:3 * n]                               # c' = f c + i g
        x = sig[:, 3 * n:] * xp.tanh(c)                                   # h' = o tanh(c')
        states[k] = Tensor(xp.concat([x, c], axis=1))                     # (N, 2H)
    a = None
    h_tilde = x                                                           # (N, H) top layer
    if decoder.attention is not None:
        mem = memory.data                                                 # (N, S, H)
        q = x if p["query"] is None else xp.matmul(x, p["query"])        # (N, H)
        a, context = F.attention_arrays(q, mem, pad_mask)                 # (N, S), (N, H)
        h_tilde = xp.tanh(xp.matmul(xp.concat([x, context], axis=1), p["combine"]))  # (N, H)
        a = Tensor(a)
    logits = xp.matmul(h_tilde, p["out"])                                 # (N, V), fresh
    if p["out_bias"] is not None:
        logits += p["out_bias"]
    logits -= xp.max(logits, axis=1, keepdims=True)                       # log_softmax, in place
    logits -= xp.log(xp.sum(xp.exp(logits), axis=1, keepdims=True))
    return Tensor(logits), Tensor(h_tilde), a
