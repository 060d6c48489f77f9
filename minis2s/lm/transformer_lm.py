"""A causal Transformer language model: ``P(w_t | w_<t)`` by masked self-attention.

The decoder of a Transformer without a source ("decoder-only", as GPT): token embedding + position
encoding -> ``num_layers`` self-attention layers -> a final LayerNorm -> a linear generator over
the vocabulary. Every position attends to itself and the positions before it (the causal mask,
``is_causal=True``) and never to PAD (``key_padding_mask``: with the right-padded batches of
minis2s the causal mask alone already hides every PAD key from every real position, so this mask
changes nothing there; it would keep out a PAD placed before a real token), so all positions of
a sentence are
trained at once with teacher forcing (``x[:-1] -> x[1:]``) while each prediction still sees only
its prefix -- the same objective as ``minis2s.lm.lstm_lm.LSTMLanguageModel``, and the same
interface (``forward``, ``loss``, ``score``, ``generate``), so the LM trainer, perplexity,
sampling and checkpoints serve both.

Choices, and why:

* Layers: ``grad.nn.TransformerEncoderLayer`` with ``norm_first=True`` (pre-norm) and a final
  ``LayerNorm``: the residual path from the embedding to the generator carries no normalisation,
  which trains without a long warm-up at these small sizes (post-norm needs one to start at all).
* Positions: ``positions="sinusoidal"`` (default; no parameters, any length) or ``"learned"`` (a
  table of ``max_len`` rows; longer sentences are refused with a clear error).
* Embeddings are not scaled by ``sqrt(d_model)``: ``grad.nn.Embedding`` starts at unit variance,
  the scale of the sinusoidal table, so neither drowns the other.
* Generator: a separate ``Linear`` by default; ``tie_weights=True`` uses the embedding matrix (and
  a separate output bias), as the LSTM LM's option does.
* Decoding recomputes the whole prefix at each step (no key/value cache): simple and exactly the
  training-time computation; the cost per step grows with the prefix, fine for sentences.
"""
from __future__ import annotations

import numpy as np

import grad
from grad import backend as B
from grad import functional as F
from grad import nn
from grad.nn.utils import eval_mode
from grad.tensor import Tensor, no_grad

from .lstm_lm import BOS, EOS, PAD, next_tokens, pad_batch, score_in_batches, token_cross_entropy

POSITIONS = ("sinusoidal", "learned")


class TransformerLanguageModel(nn.Module):
    """``TransformerLanguageModel(vocab_size, d_model=128, nhead=4, num_layers=2,
    dim_feedforward=None, dropout=0.1, pad_idx=0, positions="sinusoidal", max_len=512,
    tie_weights=False, generator=None, dtype="float32")``.

    ``dim_feedforward`` defaults to ``4 * d_model``; ``max_len`` bounds the sequence length only
    for learned positions. Parameters: ``embedding``, ``positional.weight`` (learned only),
    ``layers.{k}.*`` (PyTorch's names), ``norm``, ``output_layer``.
    """

    def __init__(self, vocab_size: int, d_model: int = 128, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int | None = None, dropout: float = 0.1, pad_idx: int = PAD,
                 positions: str = "sinusoidal", max_len: int = 512, tie_weights: bool = False, *,
                 generator=None, dtype="float32"):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
        if positions not in POSITIONS:
            raise ValueError(f"positions must be 'sinusoidal' or 'learned', got {positions!r}")
        dim_feedforward = dim_feedforward or 4 * d_model
        from ..memory import model_bytes, require, transformer_lm_params
        n_params = transformer_lm_params(vocab_size, d_model, num_layers, dim_feedforward,
                                         max_len if positions == "learned" else 0)
        require(model_bytes(n_params), f"a Transformer language model of {n_params:,} parameters "
                f"(d_model {d_model}, num_layers {num_layers}, dim_feedforward {dim_feedforward}, "
                f"vocabulary {vocab_size})")
        self.config = dict(vocab_size=vocab_size, d_model=d_model, nhead=nhead,
                           num_layers=num_layers, dim_feedforward=dim_feedforward, dropout=dropout,
                           pad_idx=pad_idx, positions=positions, max_len=max_len,
                           tie_weights=tie_weights)
        self.pad_idx, self.dropout = pad_idx, dropout
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_idx, generator=generator,
                                      dtype=dtype)
        self.positional = nn.PositionalEncoding(d_model, dropout, max_len,
                                                learned=positions == "learned",
                                                generator=generator, dtype=dtype)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout,
                                           norm_first=True, generator=generator, dtype=dtype)
        self.layers = nn.TransformerEncoder(layer, num_layers).layers      # layers.0, layers.1, ...
        self.norm = nn.LayerNorm(d_model, dtype=dtype)
        self.output_layer = nn.Linear(d_model, vocab_size, generator=generator, dtype=dtype)
        if tie_weights:
            self.output_layer.weight = self.embedding.weight
        self.dropout_generator = generator

    def hidden(self, x):
        """``x`` ``(B, T)`` ids -> the final normalised states ``(B, T, d_model)``; position ``t``
        depends on ``x[:, :t + 1]`` only."""
        x = x if isinstance(x, Tensor) else Tensor(B.asarray(x, "int64"))
        n_steps = x.shape[1]
        if self.positional.learned and n_steps > self.positional.max_len:
            raise ValueError(f"a sequence of {n_steps} tokens (with <s>) is longer than this "
                             f"model's learned positions (max_len {self.positional.max_len})")
        pad = x.data == self.pad_idx                                      # (B, T) True at PAD
        h = self.positional(self.embedding(x))                            # (B, T, E)
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad, is_causal=True)        # (B, T, E)
        return self.norm(h)

    def forward(self, x, lengths=None, hx=None):
        """``x``: ``(B, T)`` ids -> ``logits (B, T, V)`` and ``None`` (no recurrent state; the
        signature is the LSTM LM's, ``lengths`` and ``hx`` are not needed: PAD is found from
        the ids)."""
        if hx is not None:
            raise ValueError("TransformerLanguageModel has no recurrent state (hx); pass the "
                             "whole prefix instead")
        return self.output_layer(self.hidden(x)), None                    # (B, T, V)

    def loss(self, x_in, x_out, lengths=None, reduction: str = "mean") -> Tensor:
        """Cross-entropy per predicted token (PAD excluded; EOS counted, BOS never predicted)."""
        logits, _ = self(x_in)
        return token_cross_entropy(logits, x_out, self.pad_idx, reduction)

    # At most this many (row, step, word) scores at a time while scoring (see the LSTM LM).
    score_cells: int = 1 << 21

    @no_grad()
    def score(self, sentences, batch_size: int = 64):
        """Log-probability (natural log) of each id sentence (without BOS/EOS; they are added)
        and the number of predicted tokens: a list of ``(logprob, n_tokens)``. The scores over
        the vocabulary are made a slice of steps at a time (at most ``score_cells`` numbers)."""
        with eval_mode(self):
            return score_in_batches(self._score_batch, sentences, batch_size, self.score_cells)

    def _score_batch(self, chunk):
        ids, _ = pad_batch(chunk)
        x_in, x_out = ids[:, :-1], ids[:, 1:]                                 # (B, T)
        mask = x_out != self.pad_idx
        h = self.hidden(x_in)                                                 # (B, T, E)
        steps = max(1, self.score_cells // (len(chunk) * self.config["vocab_size"]))
        totals = np.zeros(len(chunk))
        n_steps = x_in.shape[1]
        for s in range(0, n_steps, steps):
            e = min(s + steps, n_steps)                    # in bounds: the array API requires it
            logp = B.to_numpy(F.log_softmax(self.output_layer(h[:, s:e]), dim=-1).data)
            picked = np.take_along_axis(logp, x_out[:, s:e, None], axis=2)[:, :, 0]
            totals += np.where(mask[:, s:e], picked, 0.0).sum(axis=1, dtype=np.float64)
        return [(float(t), int(m.sum())) for t, m in zip(totals, mask)]

    @no_grad()
    def generate(self, n: int = 1, max_len: int = 50, temperature: float = 1.0, top_k: int | None = None,
                 greedy: bool = False, prompt=None, generator=None):
        """Sample ``n`` sentences at once, as ``LSTMLanguageModel.generate`` (same arguments, same
        draws from ``generator`` per step). Auto-regressive: each step runs the whole prefix and
        reads the last position. Returns lists of ids (without EOS)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        gen = generator if generator is not None else grad.Generator(0)
        with eval_mode(self):
            outputs = self._sample(n, max_len, greedy, temperature, top_k, prompt, gen)
        return [list(prompt or []) + o for o in outputs]

    def _sample(self, n, max_len, greedy, temperature, top_k, prompt, gen):
        """``generate``'s loop (in eval mode): the sampled ids of ``n`` sentences."""
        prefix = np.array([[BOS] + list(prompt or [])] * n, dtype=np.int64)     # (n, t)
        outputs = [[] for _ in range(n)]
        done = np.zeros(n, dtype=bool)
        if self.positional.learned:                       # never step past the learned table
            max_len = min(max_len, self.positional.max_len - prefix.shape[1] + 1)
        for _ in range(max_len):
            h = self.hidden(Tensor(B.from_numpy(prefix)))                   # (n, t, E)
            logits = self.output_layer(h[:, -1])                            # (n, V)
            nxt = next_tokens(logits.data, self.pad_idx, temperature, top_k, greedy, gen)
            for i in np.nonzero(~done)[0]:
                if nxt[i] == EOS:
                    done[i] = True
                else:
                    outputs[i].append(int(nxt[i]))
            if done.all():
                break
            # finished rows keep growing with EOS: harmless, their outputs are complete
            prefix = np.concatenate([prefix, np.where(done, EOS, nxt)[:, None].astype(np.int64)], 1)
        return outputs
