"""An LSTM language model: ``P(w_t | w_<t)`` with no Markov cut-off.

It is the seq2seq decoder without a source: embedding -> ``grad.nn.LSTM`` -> a linear
"generator" over the vocabulary. Trained with teacher forcing on ``x[:-1] -> x[1:]`` (each
sentence is ``BOS w_1 ... w_n EOS``), it minimises the cross-entropy per predicted token, i.e.
maximises the likelihood. Because words are dense vectors, sequences never seen in training still
get sensible probabilities -- what n-gram counts cannot do.
"""
from __future__ import annotations

import math

import numpy as np

import grad
from grad import backend as B
from grad import functional as F
from grad import nn, ops
from grad.nn.utils import eval_mode
from grad.tensor import Tensor, no_grad

from ..data.vocab import BOS, EOS, PAD  # noqa: F401  (re-exported: minis2s.lm.lstm_lm.BOS, ...)
from ..decoding import forbid


def pad_batch(sequences, pad: int = PAD):
    """Lists of ids -> ``(B, T)`` int64 host array and lengths ``(B,)``."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    out = np.full((len(sequences), max(int(lengths.max()), 1)), pad, dtype=np.int64)
    for i, s in enumerate(sequences):
        out[i, :len(s)] = s
    return out, lengths


class LSTMLanguageModel(nn.Module):
    """``LSTMLanguageModel(vocab_size, emb_size=128, hidden_size=256, num_layers=1, dropout=0.0,
    pad_idx=0, tie_weights=False, generator=None)``.

    ``tie_weights`` shares the embedding matrix with the output layer (needs ``emb_size ==
    hidden_size``): the same vector represents a word going in and coming out.
    """

    def __init__(self, vocab_size: int, emb_size: int = 128, hidden_size: int = 256,
                 num_layers: int = 1, dropout: float = 0.0, pad_idx: int = PAD,
                 tie_weights: bool = False, *, generator=None):
        super().__init__()
        if tie_weights and emb_size != hidden_size:
            raise ValueError(f"tie_weights needs emb_size == hidden_size, got {emb_size} and {hidden_size}")
        from ..memory import lstm_lm_params, model_bytes, require
        n_params = lstm_lm_params(vocab_size, emb_size, hidden_size, num_layers)
        require(model_bytes(n_params), f"an LSTM language model of {n_params:,} parameters "
                f"(emb_size {emb_size}, hidden_size {hidden_size}, num_layers {num_layers}, "
                f"vocabulary {vocab_size})")
        self.config = dict(vocab_size=vocab_size, emb_size=emb_size, hidden_size=hidden_size,
                           num_layers=num_layers, dropout=dropout, pad_idx=pad_idx,
                           tie_weights=tie_weights)
        self.pad_idx, self.dropout = pad_idx, dropout
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx, generator=generator)
        self.rnn = nn.LSTM(emb_size, hidden_size, num_layers, batch_first=True, dropout=dropout,
                           generator=generator)
        self.output_layer = nn.Linear(hidden_size, vocab_size, generator=generator)
        if tie_weights:
            self.output_layer.weight = self.embedding.weight
        self.dropout_generator = generator

    def forward(self, x, lengths=None, hx=None):
        """``x``: ``(B, T)`` ids -> ``logits (B, T, V)`` and the final ``(h, c)``."""
        x = x if isinstance(x, Tensor) else Tensor(B.asarray(x, "int64"))
        emb = F.dropout(self.embedding(x), self.dropout, self.training, self.dropout_generator)
        out, state = self.rnn(emb, hx=hx, lengths=lengths)                # (B, T, H)
        out = F.dropout(out, self.dropout, self.training, self.dropout_generator)
        return self.output_layer(out), state                              # (B, T, V)

    def loss(self, x_in, x_out, lengths=None, reduction: str = "mean") -> Tensor:
        """Cross-entropy per predicted token (PAD excluded; EOS counted, BOS never predicted).

        ``lengths`` is accepted (the Transformer LM's signature) and not needed: the LSTM is
        causal, so the outputs at a sentence's real positions never see its padding, and the
        outputs past its end only predict PAD targets, which the loss ignores (their gradient
        is exactly zero). Running the padded rows unmasked gives the same loss and gradients
        as ``self(x_in, lengths)`` without the per-step masking (tests/test_lstm_lm.py)."""
        logits, _ = self(x_in)                                            # (B, T, V)
        return token_cross_entropy(logits, x_out, self.pad_idx, reduction)

    # At most this many numbers per array while scoring: a batch's (B, T, V) scores are made
    # a slice of steps at a time, and a batch whose (B, T) ids alone would pass it (one line of
    # a million words among short ones) is scored a sentence at a time.
    score_cells: int = 1 << 21

    @no_grad()
    def score(self, sentences, batch_size: int = 64):
        """Log-probability (natural log) of each id sentence (without BOS/EOS; they are added)
        and its cross-entropy per predicted token. Returns a list of ``(logprob, n_tokens)``.

        Memory stays bounded whatever the length: the scores over the vocabulary are computed
        for at most ``score_cells`` (row, step, word) cells at a time, slices of steps that carry
        the LSTM state from one slice to the next (the same probabilities)."""
        with eval_mode(self):
            return score_in_batches(self._score_batch, sentences, batch_size, self.score_cells)

    def _score_batch(self, chunk):
        ids, lengths = pad_batch(chunk)
        x_in, x_out = ids[:, :-1], ids[:, 1:]                                 # (B, T)
        mask = x_out != self.pad_idx
        steps = max(1, self.score_cells // (len(chunk) * self.config["vocab_size"]))
        if x_in.shape[1] <= steps:                                           # one slice
            logits, _ = self(x_in, lengths - 1)
            logp = B.to_numpy(F.log_softmax(logits, dim=-1).data)            # (B, T, V)
            picked = np.take_along_axis(logp, x_out[:, :, None], axis=2)[:, :, 0]
            return [(float(row[m].sum()), int(m.sum())) for row, m in zip(picked, mask)]
        totals, state = np.zeros(len(chunk)), None
        for s in range(0, x_in.shape[1], steps):
            logits, state = self(x_in[:, s:s + steps], hx=state)              # (B, t, V)
            logp = B.to_numpy(F.log_softmax(logits, dim=-1).data)
            picked = np.take_along_axis(logp, x_out[:, s:s + steps, None], axis=2)[:, :, 0]
            totals += np.where(mask[:, s:s + steps], picked, 0.0).sum(axis=1, dtype=np.float64)
        return [(float(t), int(m.sum())) for t, m in zip(totals, mask)]

    @no_grad()
    def generate(self, n: int = 1, max_len: int = 50, temperature: float = 1.0, top_k: int | None = None,
                 greedy: bool = False, prompt=None, generator=None):
        """Sample ``n`` sentences at once (batched). ``temperature`` < 1 sharpens the distribution,
        > 1 flattens it; ``top_k`` keeps only the k most probable tokens; ``greedy`` takes the
        argmax. ``prompt``: ids to start from (after BOS). Returns lists of ids (without EOS)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        gen = generator if generator is not None else grad.Generator(0)
        with eval_mode(self):
            outputs = self._sample(n, max_len, temperature, top_k, greedy, prompt, gen)
        return [list(prompt or []) + o for o in outputs]

    def _sample(self, n, max_len, temperature, top_k, greedy, prompt, gen):
        """``generate``'s loop (in eval mode): the sampled ids of ``n`` sentences."""
        prefix = [BOS] + list(prompt or [])
        x = Tensor(B.from_numpy(np.array([prefix] * n, dtype=np.int64)))
        logits, state = self(x)
        outputs = [[] for _ in range(n)]
        done = np.zeros(n, dtype=bool)
        for _ in range(max_len):
            nxt = next_tokens(logits.data[:, -1, :], self.pad_idx, temperature, top_k, greedy, gen)
            for i in np.nonzero(~done)[0]:
                if nxt[i] == EOS:
                    done[i] = True
                else:
                    outputs[i].append(int(nxt[i]))
            if done.all():
                break
            logits, state = self(Tensor(B.from_numpy(nxt[:, None].astype(np.int64))), hx=state)
        return outputs


def token_cross_entropy(logits: Tensor, x_out, pad_idx: int, reduction: str = "mean") -> Tensor:
    """The language models' loss: cross-entropy of ``logits`` ``(B, T, V)`` against the next ids
    ``x_out`` ``(B, T)``, PAD excluded (per predicted token with ``reduction="mean"``)."""
    v = logits.shape[-1]
    target = x_out if isinstance(x_out, Tensor) else Tensor(B.asarray(x_out, "int64"))
    return F.cross_entropy(ops.reshape(logits, (-1, v)), ops.reshape(target, (-1,)),
                           ignore_index=pad_idx, reduction=reduction)

def score_in_batches(score_batch, sentences, batch_size: int, score_cells: int):
    """The scoring loop both language models share: ``sentences`` (id lists, no BOS/EOS) in
    batches of ``batch_size``, each wrapped in BOS ... EOS and handed to ``score_batch``; a batch
    of more than ``score_cells`` (row, step) cells is scored one sentence at a time."""
    results = []
    for start in range(0, len(sentences), batch_size):
        chunk = [[BOS] + list(s) + [EOS] for s in sentences[start:start + batch_size]]
        if len(chunk) * max(len(c) for c in chunk) <= score_cells:
            results.extend(score_batch(chunk))
        else:
            for c in chunk:
                results.extend(score_batch([c]))
    return results


def next_tokens(last_logits, pad_idx: int, temperature: float, top_k, greedy: bool, gen):
    """The sampling rule both language models share: the next id of each row of ``last_logits``
    ``(n, V)``, never PAD or BOS. ``greedy`` takes the argmax; otherwise the logits are divided by
    ``temperature``, cut to the ``top_k`` largest, and one id is drawn per row by inverting the
    cumulative distribution at a uniform number from ``gen`` (one draw per row and step)."""
    last = B.to_numpy(forbid(last_logits, (pad_idx, BOS))).astype(np.float64)   # (n, V)
    if greedy:
        return last.argmax(axis=1)
    last = last / temperature
    if top_k is not None and top_k < last.shape[1]:
        kth = np.sort(last, axis=1)[:, -top_k][:, None]
        last = np.where(last < kth, -np.inf, last)
    p = np.exp(last - last.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    u = gen.host_random(last.shape[0])[:, None]
    return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), p.shape[1] - 1)


def perplexity_from_scores(scores) -> float:
    """exp(total negative log-likelihood / number of predicted tokens)."""
    nll = -sum(s for s, _ in scores)
    n = sum(k for _, k in scores)
    return math.exp(nll / max(n, 1))
