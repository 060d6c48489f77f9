"""``TransformerSeq2Seq``: the encoder-decoder of "Attention is all you need" on grad's layers,
with the same training path (``loss``) and the same decoder-step interface as the LSTM
``Seq2Seq``, so the trainer, greedy decoding and beam search run either model unchanged.

The layout is ``torch.nn.Transformer``'s defaults: post-norm layers (``norm_first=False``) and a
final LayerNorm after each stack. Around it::

    src (B, S) -> emb * sqrt(d) + PE -> encoder (self-attention; PAD keys masked) -> memory (B, S, d)
    tgt_in (B, T) -> emb * sqrt(d) + PE -> decoder (causal self-attention, cross-attention on
        memory; PAD keys of the source masked) -> Linear (d -> V) -> logits (B, T, V)

Training sees the whole target at once: the causal mask makes position t read only positions
<= t, which is teacher forcing done in parallel. Inference stays auto-regressive: one token per
``decode_step``, with a key/value cache so that step t costs O(t), not a recomputation of all
t positions. The cross-attention's keys and values (a function of the source only) are computed
once in ``init_decoding``.

Embeddings are drawn normal with standard deviation ``d ** -0.5`` and multiplied by ``sqrt(d)``,
so that they enter the first layer with unit scale, as large as the position table.
"""
from __future__ import annotations

import math

from grad import backend as B
from grad import functional as F
from grad import nn, ops
from grad.nn.layers import _generator
from grad.nn.transformer import sinusoidal_encoding
from grad.tensor import Tensor

from .seq2seq import BOS, EOS, PAD, as_ids


def transformer_seq2seq_params(src_vocab_size: int, tgt_vocab_size: int, d_model: int = 128,
                               num_encoder_layers: int = 3, num_decoder_layers: int = 3,
                               dim_feedforward: int = 512, positions: str = "sinusoidal",
                               max_positions: int = 512, share_embeddings: bool = False,
                               **_ignored) -> int:
    """Parameters of ``TransformerSeq2Seq`` (exact; a test compares with a built model)."""
    e, f = d_model, dim_feedforward
    attention = 3 * e * e + 3 * e + e * e + e                     # in_proj and out_proj
    feed_forward = e * f + f + f * e + e
    encoder = num_encoder_layers * (attention + feed_forward + 2 * 2 * e) + 2 * e
    decoder = num_decoder_layers * (2 * attention + feed_forward + 3 * 2 * e) + 2 * e
    embeddings = (src_vocab_size + (0 if share_embeddings else tgt_vocab_size)) * e
    learned = max_positions * e if positions == "learned" else 0
    return embeddings + learned + encoder + decoder + e * tgt_vocab_size + tgt_vocab_size


class TransformerSeq2Seq(nn.Module):
    """``TransformerSeq2Seq(src_vocab_size, tgt_vocab_size, d_model=128, nhead=4,
    num_encoder_layers=3, num_decoder_layers=3, dim_feedforward=512, dropout=0.1, pad_idx=0,
    positions="sinusoidal" | "learned", max_positions=512, share_embeddings=False,
    norm_first=False, generator=None)``.

    Submodules: ``src_embedding``, ``tgt_embedding`` (the same module with
    ``share_embeddings``, which needs one vocabulary for both sides), ``positions``
    (``grad.nn.PositionalEncoding``, its dropout applied to the sum), ``encoder`` and ``decoder``
    (``grad.nn.TransformerEncoder`` / ``TransformerDecoder`` with their final ``norm``) and
    ``output_layer`` (``Linear(d_model, V)``). ``generator`` draws the weights and the dropout
    masks.
    """

    arch = "transformer"

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, d_model: int = 128,
                 nhead: int = 4, num_encoder_layers: int = 3, num_decoder_layers: int = 3,
                 dim_feedforward: int = 512, dropout: float = 0.1, pad_idx: int = PAD,
                 positions: str = "sinusoidal", max_positions: int = 512,
                 share_embeddings: bool = False, norm_first: bool = False, *, generator=None):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        if positions not in ("sinusoidal", "learned"):
            raise ValueError(f"positions must be 'sinusoidal' or 'learned', got {positions!r}")
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError(f"share_embeddings needs one vocabulary for both sides, got sizes "
                             f"{src_vocab_size} and {tgt_vocab_size}")
        from ..memory import model_bytes, require
        self.config = dict(arch="transformer", src_vocab_size=src_vocab_size,
                           tgt_vocab_size=tgt_vocab_size, d_model=d_model, nhead=nhead,
                           num_encoder_layers=num_encoder_layers,
                           num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
                           dropout=dropout, pad_idx=pad_idx, positions=positions,
                           max_positions=max_positions, share_embeddings=share_embeddings,
                           norm_first=norm_first)
        n_params = transformer_seq2seq_params(**self.config)
        require(model_bytes(n_params), f"a Transformer of {n_params:,} parameters (d_model "
                f"{d_model}, {num_encoder_layers}+{num_decoder_layers} layers, feed-forward "
                f"{dim_feedforward}, vocabularies {src_vocab_size} and {tgt_vocab_size})")
        self.d_model, self.nhead, self.pad_idx = d_model, nhead, pad_idx
        self.vocab_size = tgt_vocab_size
        self.dropout_generator = generator
        self.src_embedding = self._embedding(src_vocab_size, generator)
        self.tgt_embedding = self.src_embedding if share_embeddings else \
            self._embedding(tgt_vocab_size, generator)
        self.positions = nn.PositionalEncoding(d_model, dropout, max_positions,
                                               learned=positions == "learned", generator=generator)
        kw = dict(dim_feedforward=dim_feedforward, dropout=dropout, norm_first=norm_first,
                  generator=generator)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model, nhead, **kw),
                                             num_encoder_layers, nn.LayerNorm(d_model))
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(d_model, nhead, **kw),
                                             num_decoder_layers, nn.LayerNorm(d_model))
        self.output_layer = nn.Linear(d_model, tgt_vocab_size, generator=generator)

    def _embedding(self, vocab_size: int, generator) -> nn.Embedding:
        emb = nn.Embedding(vocab_size, self.d_model, padding_idx=self.pad_idx, generator=generator)
        w = _generator(generator).normal((vocab_size, self.d_model), 0.0, self.d_model ** -0.5)
        w[self.pad_idx, :] = 0.0
        emb.weight.data = w
        return emb

    def _embed(self, embedding: nn.Embedding, ids: Tensor) -> Tensor:
        return self.positions(embedding(ids) * math.sqrt(self.d_model))    # (B, L, d)

    # ------------------------------------------------------------------ training path
    def encode(self, src, src_lengths=None):
        """``memory (B, S, d)`` and the source PAD mask ``(B, S)`` (bool, True at PAD). The
        lengths are implied by the PAD ids and only accepted for ``Seq2Seq``'s signature."""
        src = as_ids(src)
        pad_mask = src.data == self.pad_idx                                 # (B, S)
        memory = self.encoder(self._embed(self.src_embedding, src),
                              src_key_padding_mask=Tensor(pad_mask))       # (B, S, d)
        return memory, pad_mask

    def logits(self, src, src_lengths, tgt_in, tf_ratio: float = 1.0, generator=None,
               return_attention: bool = False):
        """Unnormalised scores ``(B, T, V)`` for every target position at once (the causal mask
        keeps each position from reading later ones). Target PAD needs no mask: PAD comes only
        after the sentence, where causality already hides it from every real position, and the
        loss ignores PAD positions. ``return_attention`` adds the last layer's cross-attention
        averaged over the heads ``(B, T, S)`` (computed step by step, without gradient)."""
        if tf_ratio < 1.0:
            raise ValueError("a Transformer trains with teacher forcing only (tf_ratio 1): its "
                             f"training pass reads the whole reference at once, got {tf_ratio}")
        memory, pad_mask = self.encode(src, src_lengths)
        tgt_in = as_ids(tgt_in)
        x = self.decoder(self._embed(self.tgt_embedding, tgt_in), memory, tgt_is_causal=True,
                         memory_key_padding_mask=Tensor(pad_mask))          # (B, T, d)
        logits = self.output_layer(x)                                       # (B, T, V)
        if not return_attention:
            return logits
        weights = self.cross_attention(src, src_lengths, tgt_in)           # (B, L, h, T, S)
        return logits, Tensor(B.xp.mean(weights[:, -1], axis=1))

    def forward(self, src, src_lengths, tgt_in, tf_ratio: float = 1.0, generator=None,
                return_attention: bool = False):
        """``log P(y_t | y_<t, x)`` as ``(B, T, V)`` (and attention ``(B, T, S)`` on request)."""
        out = self.logits(src, src_lengths, tgt_in, tf_ratio, generator, return_attention)
        logits, attention = out if return_attention else (out, None)
        log_probs = F.log_softmax(logits, dim=-1)
        return (log_probs, attention) if return_attention else log_probs

    def loss(self, src, src_lengths, tgt_in, tgt_out, tf_ratio: float = 1.0, generator=None,
             label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
        """Cross-entropy per predicted target token (PAD excluded, EOS counted), as
        ``Seq2Seq.loss`` (the same arguments; ``tf_ratio`` must be 1)."""
        logits = self.logits(src, src_lengths, tgt_in, tf_ratio, generator)    # (B, T, V)
        vocab = logits.shape[-1]
        return F.cross_entropy(ops.reshape(logits, (-1, vocab)), ops.reshape(as_ids(tgt_out), (-1,)),
                               ignore_index=self.pad_idx, reduction=reduction,
                               label_smoothing=label_smoothing)

    # ------------------------------------------------------------------ decoder-step interface
    def init_decoding(self, src, src_lengths=None) -> "TransformerDecodingState":
        """Encode ``src`` ``(N, S)`` and compute every decoder layer's cross-attention keys and
        values once; the self-attention caches start empty."""
        memory, pad_mask = self.encode(src, src_lengths)                   # (N, S, d)
        cross = []
        for layer in self.decoder.layers:
            mha, e = layer.multihead_attn, self.d_model
            bias = None if mha.in_proj_bias is None else mha.in_proj_bias[e:]
            k, v = ops.split(F.linear(memory, mha.in_proj_weight[e:], bias), e, dim=-1)
            cross.append((mha._split_heads(k), mha._split_heads(v)))       # (N, h, S, dh) each
        allowed = B.xp.logical_not(pad_mask)[:, None, None, :]             # (N, 1, 1, S)
        return TransformerDecodingState(cross, Tensor(allowed), [None] * len(cross), 0)

    def decode_step(self, prev_tokens, state: "TransformerDecodingState"):
        """One auto-regressive step: ``prev_tokens`` ``(N,)`` (BOS at the first step) ->
        ``(log_probs (N, V), state, attention (N, S))``. The attention is the last layer's
        cross-attention averaged over the heads; ``state.cross_weights`` keeps every layer and
        head ``(N, L, h, S)`` of this step. Inference only (eval mode: no dropout)."""
        t = state.step
        y = ops.reshape(as_ids(prev_tokens), (-1, 1))                       # (N, 1)
        x = self.tgt_embedding(y) * math.sqrt(self.d_model)                 # (N, 1, d)
        x = self.positions.dropout(x + self._position(t, x))
        weights = []
        for k, layer in enumerate(self.decoder.layers):
            x, state.self_kv[k], w = _decoder_layer_step(layer, x, state.self_kv[k],
                                                        state.cross[k], state.allowed)
            weights.append(w)                                                # (N, h, S)
        x = self.decoder.norm(x) if self.decoder.norm is not None else x
        log_probs = F.log_softmax(self.output_layer(ops.reshape(x, (x.shape[0], -1))), dim=-1)
        state.cross_weights = B.xp.stack([w.data for w in weights], axis=1)   # (N, L, h, S)
        state.step = t + 1
        return log_probs, state, Tensor(B.xp.mean(weights[-1].data, axis=1))  # (N, V), (N, S)

    def _position(self, t: int, like: Tensor) -> Tensor:
        """Row ``t`` of the position table, ``(d,)``."""
        pe = self.positions
        if pe.learned:
            if t >= pe.max_len:
                raise ValueError(f"decoding step {t + 1} is past the learned position table "
                                 f"(max_positions={pe.max_len}); decode fewer tokens")
            return pe.weight[t]
        return sinusoidal_encoding(t + 1, self.d_model, B.dtype_name(like.dtype))[t]

    def cross_attention(self, src, src_lengths, tgt_in):
        """The cross-attention weights of every decoder layer and head while reading
        ``tgt_in`` ``(B, T)`` (BOS first), as a host array ``(B, L, h, T, S)``, from the cached
        decoding steps (the same weights as the full pass; no gradient)."""
        import numpy as np
        from grad.tensor import no_grad
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                tgt_in = as_ids(tgt_in)
                state = self.init_decoding(src, src_lengths)
                steps = []
                for t in range(tgt_in.shape[1]):
                    _, state, _ = self.decode_step(tgt_in[:, t], state)
                    steps.append(B.to_numpy(state.cross_weights))          # (B, L, h, S)
        finally:
            self.train(was_training)
        return np.stack(steps, axis=3)                                      # (B, L, h, T, S)

    # ------------------------------------------------------------------ inference
    def greedy(self, src, src_lengths, max_len: int = 50, bos: int = BOS, eos: int = EOS):
        from ..search import greedy
        return greedy(self, src, src_lengths, max_len=max_len, bos=bos, eos=eos)

    def beam_search(self, src, src_lengths, beam_size: int = 5, n_best: int = 1,
                    length_penalty: float = 0.0, max_len: int = 50, bos: int = BOS, eos: int = EOS):
        from ..search import beam_search
        return beam_search(self, src, src_lengths, beam_size=beam_size, n_best=n_best,
                           length_penalty=length_penalty, max_len=max_len, bos=bos, eos=eos)


def _merge_heads(x: Tensor) -> Tensor:
    n, h, t, d = x.shape                                                    # (N, h, 1, dh)
    return ops.reshape(ops.permute(x, (0, 2, 1, 3)), (n, t, h * d))         # (N, 1, d)


def _decoder_layer_step(layer, x, cache, cross, allowed):
    """One ``TransformerDecoderLayer`` on one new position ``x`` ``(N, 1, d)``: the same math
    as the layer's ``forward`` at its last position, with the self-attention's keys and values
    of the earlier positions read from ``cache`` (None at the first step) instead of recomputed.
    Returns the new ``x``, the grown cache and the cross-attention weights ``(N, h, S)``."""
    sa, mha = layer.self_attn, layer.multihead_attn
    e = sa.embed_dim

    def self_block(h):
        q, k, v = (sa._split_heads(a) for a in sa._project(h, h, h))       # (N, h, 1, dh)
        if cache is not None:
            k, v = ops.cat([cache[0], k], dim=2), ops.cat([cache[1], v], dim=2)  # (N, h, t+1, dh)
        out = F.scaled_dot_product_attention(q, k, v)                       # all earlier: no mask
        return layer.dropout1(sa.out_proj(_merge_heads(out))), (k, v)

    def cross_block(h):
        bias = None if mha.in_proj_bias is None else mha.in_proj_bias[:e]
        q = mha._split_heads(F.linear(h, mha.in_proj_weight[:e], bias))     # (N, h, 1, dh)
        out, w = F.scaled_dot_product_attention(q, cross[0], cross[1], attn_mask=allowed,
                                                need_weights=True)          # w (N, h, 1, S)
        return layer.dropout2(mha.out_proj(_merge_heads(out))), w

    if layer.norm_first:
        h, new_cache = self_block(layer.norm1(x))
        x = x + h
        h, w = cross_block(layer.norm2(x))
        x = x + h
        x = x + layer._ff_block(layer.norm3(x))
    else:
        h, new_cache = self_block(x)
        x = layer.norm1(x + h)
        h, w = cross_block(x)
        x = layer.norm2(x + h)
        x = layer.norm3(x + layer._ff_block(x))
    return x, new_cache, ops.reshape(w, (w.shape[0], w.shape[1], w.shape[3]))   # (N, 1, d), (N, h, S)


class TransformerDecodingState:
    """What ``TransformerSeq2Seq.decode_step`` carries between steps, per sequence (batch axis
    first everywhere): ``cross`` the cross-attention keys and values per layer ``(N, h, S, dh)``,
    ``allowed`` the source keys each row may attend to ``(N, 1, 1, S)``, ``self_kv`` the
    self-attention cache per layer ``(N, h, t, dh)`` (None before the first step), ``step`` the
    number of tokens read so far, ``cross_weights`` the last step's cross-attention
    ``(N, L, h, S)``."""

    def __init__(self, cross, allowed, self_kv, step):
        self.cross, self.allowed, self.self_kv, self.step = cross, allowed, self_kv, step
        self.cross_weights = None

    def reorder(self, index) -> "TransformerDecodingState":
        """A new state with every per-sequence array gathered along the batch axis by ``index``
        ``(N',)`` (beam search: expand each sentence to its beams, then follow the surviving
        ones); this one is left as it is."""
        idx = B.asarray(index.data if isinstance(index, Tensor) else index, "int64")  # (N',)

        def take(t):
            return None if t is None else ops.index_select(t, 0, idx)
        new = TransformerDecodingState([(take(k), take(v)) for k, v in self.cross],
                                       take(self.allowed),
                                       [None if kv is None else (take(kv[0]), take(kv[1]))
                                        for kv in self.self_kv], self.step)
        if self.cross_weights is not None:
            new.cross_weights = B.xp.take(self.cross_weights, idx, axis=0)
        return new
