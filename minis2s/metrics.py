"""Information-theoretic quantities and evaluation metrics, written from their definitions.

Logarithms are natural (nats) unless a ``base`` is given; ``base=2`` gives bits.

Distributions
-------------
* information content of an outcome of probability ``p``:  ``I(p) = -log p``
* entropy:        ``H(p)    = -sum_x p(x) log p(x)``          (with ``0 log 0 = 0``)
* cross-entropy:  ``H(p, q) = -sum_x p(x) log q(x)``          (``inf`` if ``q(x) = 0 < p(x)``)
* KL divergence:  ``KL(p || q) = H(p, q) - H(p) = sum_x p(x) log(p(x) / q(x)) >= 0``
* perplexity:     ``PPL = exp(H)`` for ``H`` in nats; ``H = log(PPL)``.

What is counted for sequence models (the one definition used everywhere in minis2s)
------------------------------------------------------------------------------------
A target sentence ``w_1 ... w_n`` is predicted as ``w_1 ... w_n </s>``: ``n + 1`` predicted
tokens.  The end-of-sentence token EOS **is** counted (the model must decide when to stop);
BOS ``<s>`` is only ever an input, never predicted, so it is **not** counted; PAD positions are
excluded.  The cross-entropy of a split is::

    CE = (sum over every predicted token t of the split of  -log q(t | its history))
         / (number of predicted tokens of the split)

and ``perplexity = exp(CE)`` of that whole-split mean -- never an average of per-batch
losses or per-batch perplexities (batches have different numbers of tokens, and the mean of
exponentials is not the exponential of the mean).  ``CorpusStats`` accumulates exactly the
sums needed for this.

BLEU (Papineni et al., 2002), corpus level
------------------------------------------
For n = 1..N (N = 4) the *modified* (clipped) precision is::

    p_n = sum_sentences sum_g min(count_hyp(g), max_ref count_ref(g))
          / sum_sentences (number of n-grams g in the hypothesis)

with the numerator and denominator summed over the corpus before dividing.  With ``c`` the
total hypothesis length and ``r`` the total reference length (for several references per
sentence, the reference length closest to the hypothesis length, ties to the shorter one)::

    BP   = 1                if c >= r
           exp(1 - r / c)   if 0 < c < r          (0 if c = 0)
    BLEU = 100 * BP * exp( (1/N) * sum_n log p_n )

If any ``p_n`` is zero -- or undefined because the corpus has no n-grams of that order --
BLEU is 0 (no smoothing).  For corpora where every hypothesis order has n-grams this equals
``sacrebleu.corpus_bleu(..., tokenize="none", smooth_method="none")``.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "information_content", "entropy", "cross_entropy", "kl_divergence", "perplexity", "format_ppl",
    "cross_entropy_from_perplexity", "CorpusStats", "token_accuracy", "exact_match",
    "corpus_bleu", "bleu_details",
]


# ------------------------------------------------------------------------------ distributions
def _log(x, base):
    """``log_base(x)`` elementwise; ``log(0) = -inf`` without a warning."""
    with np.errstate(divide="ignore"):
        out = np.log(np.asarray(x, dtype=np.float64))
    return out / math.log(base) if base != math.e else out


def _distribution(p, name) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).ravel()
    if p.size == 0:
        raise ValueError(f"{name} is empty")
    if np.any(p < 0) or not np.all(np.isfinite(p)):
        raise ValueError(f"{name} must hold finite non-negative probabilities")
    return p


def information_content(p: float, base: float = math.e) -> float:
    """Surprisal of an outcome of probability ``p``: ``I(p) = -log_base p`` (``inf`` at 0)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a probability must lie in [0, 1], got {p}")
    return float(-_log(p, base))


def entropy(probs, base: float = math.e) -> float:
    """``H(p) = -sum_x p(x) log p(x)``, terms with ``p(x) = 0`` contributing 0.

    A uniform distribution over ``K`` outcomes has the maximum, ``log K``; a point mass has 0.
    """
    p = _distribution(probs, "probs")
    nz = p[p > 0]
    return float(-(nz * _log(nz, base)).sum()) + 0.0


def cross_entropy(p_ref, q_model, base: float = math.e) -> float:
    """``H(p, q) = -sum_x p(x) log q(x)``: the mean code length of samples of ``p`` coded with
    ``q``.  ``inf`` when ``q(x) = 0`` somewhere ``p(x) > 0``; terms with ``p(x) = 0`` are 0."""
    p, q = _distribution(p_ref, "p_ref"), _distribution(q_model, "q_model")
    if p.shape != q.shape:
        raise ValueError(f"p and q have different sizes: {p.size} and {q.size}")
    mask = p > 0
    if np.any(q[mask] == 0):
        return math.inf
    return float(-(p[mask] * _log(q[mask], base)).sum()) + 0.0


def kl_divergence(p, q, base: float = math.e) -> float:
    """``KL(p || q) = H(p, q) - H(p) = sum_x p(x) log(p(x) / q(x))``.

    Computed in the second form (one log of a ratio per term, so no cancellation between two
    large numbers).  It is >= 0 (Gibbs' inequality), and 0 exactly when ``p = q``.
    """
    p, q = _distribution(p, "p"), _distribution(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q have different sizes: {p.size} and {q.size}")
    mask = p > 0
    if np.any(q[mask] == 0):
        return math.inf
    return max(float((p[mask] * _log(p[mask] / q[mask], base)).sum()), 0.0)


def perplexity(cross_entropy_nats: float) -> float:
    """``PPL = exp(CE)`` for a cross-entropy in nats (``inf`` past the float range)."""
    try:
        return math.exp(cross_entropy_nats)
    except OverflowError:
        return math.inf


def format_ppl(ppl: float, width: int = 8, decimals: int = 4) -> str:
    """A perplexity for a printed line: fixed-point (``1.0032``) while it reads well, ``%g`` form
    (``1.014e+304``) when it is huge, so a diverging run prints no 300-digit numbers."""
    if math.isfinite(ppl) and ppl < 1e6:
        return f"{ppl:{width}.{decimals}f}"
    return f"{ppl:{width}.{decimals}g}"


def cross_entropy_from_perplexity(ppl: float) -> float:
    """``CE = log(PPL)`` in nats: the inverse of ``perplexity``."""
    if ppl < 1.0:
        raise ValueError(f"a perplexity is >= 1, got {ppl}")
    return math.log(ppl)


# ------------------------------------------------------------------------------ corpus sums
@dataclass
class CorpusStats:
    """Running sums over the batches of a split; the figures are computed once, at the end.

    ``nll_sum``     sum of ``-log q(token)`` (nats) over predicted tokens (EOS in, BOS/PAD out)
    ``n_tokens``    number of those predicted tokens
    ``n_correct``   how many of them the model's argmax got right
    ``n_exact``     sentences decoded exactly right
    ``n_sentences`` sentences decoded

    ``cross_entropy = nll_sum / n_tokens``, ``perplexity = exp(cross_entropy)``,
    ``token_accuracy = n_correct / n_tokens``, ``exact_match = n_exact / n_sentences``.
    """

    nll_sum: float = 0.0
    n_tokens: int = 0
    n_correct: int = 0
    n_exact: int = 0
    n_sentences: int = 0

    def add(self, nll_sum: float = 0.0, n_tokens: int = 0, n_correct: int = 0,
            n_exact: int = 0, n_sentences: int = 0) -> "CorpusStats":
        """Add one batch's sums; returns ``self`` so calls can be chained."""
        self.nll_sum += float(nll_sum)
        self.n_tokens += int(n_tokens)
        self.n_correct += int(n_correct)
        self.n_exact += int(n_exact)
        self.n_sentences += int(n_sentences)
        return self

    def add_decoded(self, hyps, refs) -> "CorpusStats":
        """Count exact matches of decoded token lists against references."""
        hyps, refs = list(hyps), list(refs)
        _same_length(hyps, refs)
        return self.add(n_exact=sum(list(h) == list(r) for h, r in zip(hyps, refs)),
                        n_sentences=len(hyps))

    def __add__(self, other: "CorpusStats") -> "CorpusStats":
        return CorpusStats(**asdict(self)).add(**asdict(other))

    @property
    def cross_entropy(self) -> float:
        return self.nll_sum / self.n_tokens if self.n_tokens else math.nan

    @property
    def perplexity(self) -> float:
        return perplexity(self.cross_entropy) if self.n_tokens else math.nan

    @property
    def token_accuracy(self) -> float:
        return self.n_correct / self.n_tokens if self.n_tokens else math.nan

    @property
    def exact_match(self) -> float:
        return self.n_exact / self.n_sentences if self.n_sentences else math.nan

    def as_dict(self) -> dict:
        """The sums and the four figures, JSON-able."""
        return {**asdict(self), "cross_entropy": self.cross_entropy, "perplexity": self.perplexity,
                "token_accuracy": self.token_accuracy, "exact_match": self.exact_match}


# ------------------------------------------------------------------------------ decoded output
def _same_length(hyps, refs):
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")


def token_accuracy(hyps: Sequence[Sequence], refs: Sequence[Sequence]) -> float:
    """Position-wise accuracy: ``sum_i #{t < |ref_i| : hyp_i[t] == ref_i[t]} / sum_i |ref_i|``.

    Missing hypothesis positions count as wrong, extra ones are ignored (the denominator is the
    reference length).  0.0 for an empty corpus."""
    _same_length(hyps, refs)
    total = sum(len(r) for r in refs)
    correct = sum(sum(a == b for a, b in zip(h, r)) for h, r in zip(hyps, refs))
    return correct / total if total else 0.0


def exact_match(hyps: Sequence[Sequence], refs: Sequence[Sequence]) -> float:
    """Fraction of sentences whose hypothesis equals the reference token for token."""
    _same_length(hyps, refs)
    return sum(list(h) == list(r) for h, r in zip(hyps, refs)) / len(hyps) if hyps else 0.0


# ------------------------------------------------------------------------------ BLEU
def _ngrams(tokens: Sequence, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _closest_length(refs, c: int) -> int:
    """The reference length closest to ``c``; on a tie the shorter one (Papineni et al.)."""
    return min((abs(len(r) - c), len(r)) for r in refs)[1]


def bleu_details(hypotheses, references=None, max_n: int = 4, *, multi_refs=None) -> dict:
    """Corpus BLEU with its parts (see the module docstring for the formulas).

    ``hypotheses``: list of token lists.  Either ``references`` (one token list per
    hypothesis) or ``multi_refs`` (per hypothesis, a list of one or more reference token lists).

    Returns ``{"bleu", "precisions", "matches", "totals", "bp", "ratio", "hyp_len",
    "ref_len"}``: precisions ``p_n`` as fractions in [0, 1], the clipped match counts and
    n-gram totals per order, the brevity penalty, ``ratio = c / r``, and ``c``, ``r``.
    """
    if (references is None) == (multi_refs is None):
        raise ValueError("give exactly one of references (one per hypothesis) or multi_refs")
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    ref_sets = [[r] for r in references] if multi_refs is None else [list(rs) for rs in multi_refs]
    _same_length(hypotheses, ref_sets)
    matches, totals = [0] * max_n, [0] * max_n
    c = r = 0
    for hyp, refs in zip(hypotheses, ref_sets):
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        hyp = list(hyp)
        c += len(hyp)
        r += _closest_length(refs, len(hyp))
        for n in range(1, max_n + 1):
            hyp_counts = _ngrams(hyp, n)
            # clip each hypothesis n-gram count by its largest count in any one reference
            max_ref: Counter = Counter()
            for ref in refs:
                max_ref |= _ngrams(list(ref), n)
            matches[n - 1] += sum(min(k, max_ref[g]) for g, k in hyp_counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    precisions = [m / t if t else 0.0 for m, t in zip(matches, totals)]
    if c == 0:
        bp = 0.0
    elif c < r:
        bp = math.exp(1.0 - r / c)
    else:
        bp = 1.0
    if min(precisions) == 0.0:
        bleu = 0.0
    else:
        bleu = 100.0 * bp * math.exp(sum(math.log(p) for p in precisions) / max_n)
    return {"bleu": bleu, "precisions": precisions, "matches": matches, "totals": totals,
            "bp": bp, "ratio": c / r if r else (math.inf if c else 0.0), "hyp_len": c, "ref_len": r}


def corpus_bleu(hypotheses, references=None, max_n: int = 4, *, multi_refs=None) -> float:
    """Corpus BLEU on a 0-100 scale; ``bleu_details(...)["bleu"]``."""
    return bleu_details(hypotheses, references, max_n, multi_refs=multi_refs)["bleu"]


# ------------------------------------------------------------------------------ labels
def decoding_label(beam_size: int = 1, length_penalty: float = 0.0) -> str:
    """How the outputs that exact match and BLEU score were decoded: ``"greedy"`` or
    ``"beam 5, alpha 0.6"`` (alpha: the GNMT length penalty)."""
    if beam_size <= 1:
        return "greedy"
    return f"beam {beam_size}, alpha {length_penalty:g}"


def bleu_label(tokenizer: str) -> str:
    """A signature-like description of the BLEU that ``corpus_bleu`` computes on the tokens of
    ``tokenizer`` (the model's target tokenizer: "char", "space" or "bpe"), with the sacreBLEU
    settings that give the same number where there are any."""
    if tokenizer == "char":
        return ("BLEU (tokens: char, spaces included, smoothing: none, "
                "= sacrebleu --tokenize char --smooth-method none on targets without spaces)")
    if tokenizer == "space":
        return "BLEU (tokens: space-separated, smoothing: none, = sacrebleu --tokenize none --smooth-method none)"
    return f"BLEU (tokens: {tokenizer}, smoothing: none, no sacrebleu equivalent)"
