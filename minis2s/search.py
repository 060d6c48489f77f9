"""Inference: greedy decoding and beam search.

Both feed the model its *own* previous output (there is no reference at inference time) through
the decoder-step interface of ``minis2s.decoding`` (``model.init_decoding``,
``model.decode_step``, ``state.reorder``), under ``no_grad`` (no graph is built), so they search
any model that has those methods. PAD and BOS are never produced: their log-probabilities are set
to -inf before choosing (``minis2s.decoding.forbid``).

Both return ``Hypotheses(tokens, scores, attention)`` as host NumPy arrays; tokens exclude BOS,
run up to and including EOS, and are PAD after it.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from grad import backend as B
from grad import ops
from grad.nn.utils import eval_mode
from grad.tensor import Tensor, no_grad

from .data.vocab import BOS, EOS, PAD
from .decoding import forbid

Hypotheses = namedtuple("Hypotheses", ["tokens", "scores", "attention"])


def length_penalty(length, alpha: float):
    """GNMT's ``((5 + L) / 6) ** alpha``; a hypothesis' score is ``log P / penalty``. Log P is
    negative, so a larger ``alpha`` divides longer hypotheses by more and favours them."""
    return ((5.0 + np.asarray(length, dtype=np.float64)) / 6.0) ** alpha


def _sizes(src):
    """``(sentences, source length)`` of ``src`` (Tensor, array or nested lists)."""
    shape = src.shape if hasattr(src, "shape") else np.shape(src)
    return int(shape[0]), int(shape[1])


def _attention_host(a, n: int, n_src: int):
    """Attention weights ``(n, S)`` as a host array (zeros when the model has none)."""
    if a is None:
        return np.zeros((n, n_src))
    return B.to_numpy(a.data if isinstance(a, Tensor) else a)


@no_grad()
def greedy(model, src, src_lengths, max_len: int = 50, bos: int = BOS, eos: int = EOS,
           pad: int = PAD) -> Hypotheses:
    """Pick the most probable token at every step, for the whole batch at once. A sequence that
    produced EOS keeps producing PAD; decoding stops when all are done or at ``max_len``.

    Returns tokens ``(B, L)``, scores ``(B,)`` (sum of log-probabilities) and attention
    ``(B, L, S)`` (zeros when the model has no attention).
    """
    xp = B.xp
    n, n_src = _sizes(src)
    with eval_mode(model):
        state = model.init_decoding(src, src_lengths)
        y = Tensor(B.from_numpy(np.full(n, bos, dtype=np.int64)))         # (B,) int64
        done = np.zeros(n, dtype=bool)
        scores = np.zeros(n)
        tokens, attentions = [], []
        for _ in range(max_len):
            log_probs, state, a = model.decode_step(y, state)             # (B, V), (B, S)
            lp = forbid(log_probs.data, (pad, bos))                       # (B, V)
            best = xp.argmax(lp, axis=1)                                  # (B,)
            best_lp = B.to_numpy(xp.take_along_axis(lp, xp.reshape(best, (-1, 1)), axis=1))[:, 0]
            host = B.to_numpy(best)
            scores += np.where(done, 0.0, best_lp)
            tokens.append(np.where(done, pad, host))
            attentions.append(np.where(done[:, None], 0.0, _attention_host(a, n, n_src)))
            done |= host == eos
            if done.all():
                break
            y = Tensor(best)
    return Hypotheses(np.stack(tokens, axis=1).astype(np.int64), scores,
                      np.stack(attentions, axis=1))


def _require_beam_memory(model, src, beam_size: int, max_len: int) -> None:
    """Refuse a beam too wide for the memory available, before the ``B * K`` rows are made
    (for models that say their sizes the LSTM decoder's way)."""
    from .memory import beam_search_bytes, require
    dec = getattr(model, "decoder", None)
    if not all(hasattr(dec, a) for a in ("hidden_size", "num_layers", "vocab_size")):
        return
    n, n_src = _sizes(src)
    require(beam_search_bytes(n, beam_size, n_src, dec.hidden_size, dec.num_layers, dec.vocab_size,
                              max_len),
            f"beam search with beam size {beam_size} over {n} sentence(s)")


@no_grad()
def beam_search(model, src, src_lengths, beam_size: int = 5, n_best: int = 1,
                length_penalty: float = 0.0, max_len: int = 50, bos: int = BOS, eos: int = EOS,
                pad: int = PAD) -> Hypotheses:
    """Beam search over all sentences and beams at once: the model runs on ``B * K`` rows, and
    the bookkeeping is array operations over ``(sentences, beams)``, with no loop over sentences.

    At each step every alive hypothesis is extended by every token; the best ``2K`` candidates
    per sentence are taken from the ``K * V`` extensions. Candidates ending in EOS are *copied
    out* to that sentence's finished list (never overwritten later; the list keeps the
    ``n_best`` best seen so far, earlier ones first among equal scores); the best ``K`` others
    stay alive. A sentence stops when it has ``n_best`` finished hypotheses and no alive one can
    still beat them (exact, also with a length penalty ``alpha >= 0``). Scores are
    ``log P / ((5 + L) / 6) ** alpha``. Sentences that reach ``max_len`` with fewer than
    ``n_best`` finished hypotheses count their alive ones (without EOS) as finished.

    Returns tokens ``(B, n_best, L)``, scores ``(B, n_best)``, attention ``(B, n_best, L, S)``,
    best first (missing hypotheses, if the search found fewer than ``n_best``: PAD, -inf, 0).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and beam_size ({beam_size}), got {n_best}")
    if not length_penalty >= 0.0:
        raise ValueError(f"length_penalty (GNMT's alpha) must be >= 0, got {length_penalty}: "
                         "the early-stopping bound assumes the penalty grows with the length")
    xp = B.xp
    k = beam_size
    _require_beam_memory(model, src, k, max_len)
    n, n_src = _sizes(src)
    with eval_mode(model):
        state = model.init_decoding(src, src_lengths)
        state = state.reorder(np.repeat(np.arange(n), k))                 # B*K rows, K per sentence
        y = Tensor(B.from_numpy(np.full(n * k, bos, dtype=np.int64)))

        scores = np.full((n, k), -np.inf)
        scores[:, 0] = 0.0                                                # one live beam to start
        history = np.zeros((n, k, 0), dtype=np.int64)                     # tokens so far
        att_history = np.zeros((n, k, 0, n_src))
        finished = _Finished(n, n_best, max_len, n_src, pad)
        done = np.zeros(n, dtype=bool)
        max_penalty = _penalty(max_len, length_penalty)
        for t in range(max_len):
            log_probs, state, a = model.decode_step(y, state)             # (B*K, V), (B*K, S)
            lp = forbid(log_probs.data, (pad, bos))                       # (B*K, V)
            vocab = lp.shape[1]
            total = Tensor(xp.astype(B.from_numpy(scores.reshape(-1, 1)), lp.dtype) + lp)  # (B*K, V)
            flat = ops.reshape(total, (n, k * vocab))                     # (B, K*V)
            top = ops.topk(flat, min(2 * k, k * vocab), dim=1)
            cand_scores = top.values.numpy().astype(np.float64)           # (B, 2K)
            cand = top.indices.numpy()
            origin, token = cand // vocab, cand % vocab                   # beam, token of each
            att = _attention_host(a, n * k, n_src).reshape(n, k, n_src)

            # 1. Candidates ending in EOS are copied out as finished hypotheses.
            is_eos = (token == eos) & np.isfinite(cand_scores) & ~done[:, None]   # (B, 2K)
            if is_eos.any():
                norm = np.where(is_eos, cand_scores / _penalty(t + 1, length_penalty), -np.inf)
                finished.add(norm, origin, history, att_history, last=(eos, att))
            # 2. The best K other candidates stay alive (a stable sort keeps score order).
            order = np.argsort(np.where(token == eos, 1, 0), axis=1, kind="stable")[:, :k]
            keep_origin = np.take_along_axis(origin, order, axis=1)        # (B, K)
            keep_token = np.take_along_axis(token, order, axis=1)
            scores = np.take_along_axis(cand_scores, order, axis=1)
            scores[done] = -np.inf
            history = np.concatenate([np.take_along_axis(history, keep_origin[:, :, None], axis=1),
                                      keep_token[:, :, None]], axis=2)
            att_history = np.concatenate(
                [np.take_along_axis(att_history, keep_origin[:, :, None, None], axis=1),
                 np.take_along_axis(att, keep_origin[:, :, None], axis=1)[:, :, None, :]], axis=2)
            # 3. A sentence is done once no alive hypothesis can beat its n_best-th finished one.
            bound = scores.max(axis=1) / max_penalty                      # (B,) best future score
            done |= (finished.count >= n_best) & (finished.scores[:, n_best - 1] >= bound)
            if done.all():
                break
            # 4. Reorder the decoder's state to follow the surviving beams.
            state = state.reorder((np.arange(n)[:, None] * k + keep_origin).reshape(-1))
            y = Tensor(B.from_numpy(keep_token.reshape(-1).astype(np.int64)))

    # Sentences that ran out of steps: their alive hypotheses count as finished.
    short = (finished.count < n_best)[:, None] & np.isfinite(scores)       # (B, K)
    if short.any():
        norm = np.where(short, scores / _penalty(history.shape[2], length_penalty), -np.inf)
        finished.add(norm, np.broadcast_to(np.arange(k), (n, k)), history, att_history)
    return finished.pack()


def _penalty(length, alpha):
    return float(length_penalty(length, alpha)) if alpha else 1.0


class _Finished:
    """The finished hypotheses of every sentence, as host arrays over ``(sentences, n_best)``:
    the ``n_best`` best copied out so far, best first (among equal scores, the earlier copy
    first), so memory does not grow with the number of steps. Empty slots score -inf."""

    def __init__(self, n, n_best, max_len, n_src, pad):
        self.pad = pad
        self.scores = np.full((n, n_best), -np.inf)                      # (B, N) best first
        self.tokens = np.full((n, n_best, max_len), pad, dtype=np.int64)  # (B, N, max_len)
        self.attention = np.zeros((n, n_best, max_len, n_src))            # (B, N, max_len, S)
        self.lengths = np.zeros((n, n_best), dtype=np.int64)             # (B, N)
        self.count = np.zeros(n, dtype=np.int64)                         # (B,) copied out so far

    def add(self, new_scores, beams, history, att_history, last=None):
        """Copy out new hypotheses: entry ``(s, j)`` with a finite ``new_scores[s, j]`` is beam
        ``beams[s, j]``'s history ``history[s, b]`` ``(L,)`` (and ``att_history[s, b]``
        ``(L, S)``), followed by ``last = (token, attention (B, K, S))`` when given. The new
        entries are merged into the kept ones by one stable sort per row; kept entries are
        never modified, only dropped once ``n_best`` better ones exist."""
        n, n_best = self.scores.shape
        valid = np.isfinite(new_scores)                                   # (B, M)
        self.count += valid.sum(axis=1)
        pool = np.concatenate([self.scores, new_scores], axis=1)         # (B, N + M)
        pick = np.argsort(-pool, axis=1, kind="stable")[:, :n_best]      # (B, N) best first
        old = pick < n_best                                               # (B, N) an earlier entry
        keep = np.where(old, pick, 0)
        beam = np.take_along_axis(beams, np.where(old, 0, pick - n_best), axis=1)  # (B, N)
        length = history.shape[2]
        tokens = np.full_like(self.tokens, self.pad)                      # (B, N, max_len)
        tokens[:, :, :length] = np.take_along_axis(history, beam[:, :, None], axis=1)
        attention = np.zeros_like(self.attention)                         # (B, N, max_len, S)
        attention[:, :, :length] = np.take_along_axis(att_history, beam[:, :, None, None], axis=1)
        if last is not None:
            token, att = last
            tokens[:, :, length] = token
            attention[:, :, length] = np.take_along_axis(att, beam[:, :, None], axis=1)
            length += 1
        kept_tokens = np.take_along_axis(self.tokens, keep[:, :, None], axis=1)
        kept_attention = np.take_along_axis(self.attention, keep[:, :, None, None], axis=1)
        self.tokens = np.where(old[:, :, None], kept_tokens, tokens)
        self.attention = np.where(old[:, :, None, None], kept_attention, attention)
        self.lengths = np.where(old, np.take_along_axis(self.lengths, keep, axis=1), length)
        self.scores = np.take_along_axis(pool, pick, axis=1)
        empty = ~np.isfinite(self.scores)                                 # (B, N) no hypothesis
        self.tokens[empty] = self.pad
        self.attention[empty] = 0.0
        self.lengths[empty] = 0

    def pack(self) -> Hypotheses:
        """Trimmed to the longest kept hypothesis: PAD (and zero attention) after each one."""
        length = int(self.lengths.max())
        return Hypotheses(self.tokens[:, :, :length].copy(), self.scores.copy(),
                          self.attention[:, :, :length].copy())
