"""N-gram language models: the Markov assumption, by counting.

An order-``N`` model assumes each word depends only on the ``N - 1`` words before it::

    P(w_1 ... w_n </s>) = prod_{i=1}^{n+1} P(w_i | w_{i-N+1} ... w_{i-1})

Each sentence is padded with ``N - 1`` begin symbols ``<s>`` on the left (so every predicted
word has a full context) and one ``</s>`` on the right (so the model predicts where sentences
end).  ``<s>`` is context only, never predicted.  The *predicted vocabulary* ``V`` is the training
tokens seen at least ``min_freq`` times, plus ``</s>`` and ``<unk>``; any other token (in
training or later) is read as ``<unk>``, so with ``min_freq > 1`` ``<unk>`` gets real counts.

Smoothing
---------
``c(h, w)`` is the count of word ``w`` after context ``h``; ``c(h) = sum_w c(h, w)``;
``N1+(h .)`` the number of distinct words seen after ``h``.

* ``"add-k"`` (Lidstone; Laplace at ``k = 1``), highest order only::

      P(w | h) = (c(h, w) + k) / (c(h) + k |V|)

* ``"kneser-ney"``: interpolated Kneser-Ney (Chen & Goodman 1998, one discount per order)::

      P_n(w | h) = max(c_n(h, w) - D_n, 0) / c_n(h)
                   + D_n N1+(h .) / c_n(h) * P_{n-1}(w | h')         (h' = h minus its first word)
      P_0(w)     = 1 / |V|                                           (uniform base case)

  and ``P_n(w | h) = P_{n-1}(w | h')`` when the context ``h`` was never seen.  At the highest
  order ``c_N`` is the raw count.  At lower orders ``c_n(h, w)`` is the *continuation count*
  ``N1+(. h w)``, the number of distinct words seen before ``h w``: a lower order is used only
  when the longer context is rare, so what matters is in how many contexts a word appears, not
  how often ("Francisco" is frequent but follows only "San").  N-grams that start with ``<s>``
  cannot be extended to the left (their left neighbour is always ``<s>``), so, as in KenLM,
  they keep their raw counts.  ``discount`` is ``D`` for every order (default 0.75), or
  ``"auto"`` to estimate it per order as ``D_n = n1 / (n1 + 2 n2)`` from the numbers of
  n-grams with count 1 and 2 (Ney, Essen & Kneser 1994).  Since ``0 < D <= 1`` and counts are
  integers >= 1, each ``P_n(. | h)`` sums to exactly 1 over ``V``: the discounted mass
  ``D N1+(h .) / c(h)`` is what the lower order redistributes.

Measurement follows ``minis2s.metrics``: cross-entropy per predicted token (``</s>`` counted,
``<s>`` not) over a whole split, perplexity ``= exp(cross-entropy)``.

Models are saved as JSON (never pickle): the settings, the vocabulary and the raw highest-order
n-gram counts as ``[w_1, ..., w_N, count]`` rows; every other table is recomputed on loading.
Tokens may hold any character (BPE tokens contain spaces), so n-grams are stored as lists
rather than joined strings. The file is written atomically (temporary file, then rename), and a
damaged one is refused on loading with a ``CheckpointError`` that names it.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from typing import Iterable, Sequence

from ..data.vocab import SPECIALS
from ..metrics import perplexity as _perplexity

BOS, EOS, UNK = SPECIALS[1:4]          # the n-gram model counts token strings: "<s>", "</s>", "<unk>"
SMOOTHINGS = ("kneser-ney", "add-k")
_FORMAT, _VERSION = "minis2s-ngram", 1


class NGramLM:
    """``NGramLM(order=3, smoothing="kneser-ney", k=1.0, discount=0.75, min_freq=1)``.

    ``fit(sentences)`` counts token lists; ``prob(word, context)``, ``logprob(sentence)``,
    ``perplexity(sentences)`` and ``cross_entropy(sentences)`` query the model.
    """

    def __init__(self, order: int = 3, smoothing: str = "kneser-ney", k: float = 1.0,
                 discount: float | str = 0.75, min_freq: int = 1):
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an integer >= 1, got {order!r}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {', '.join(SMOOTHINGS)}; got {smoothing!r}")
        if not k > 0:
            raise ValueError(f"k must be > 0, got {k}")
        if discount != "auto" and not (isinstance(discount, (int, float)) and 0 < discount <= 1):
            raise ValueError(f"discount must be in (0, 1] or 'auto', got {discount!r}")
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        self.order, self.smoothing, self.k = order, smoothing, float(k)
        self.discount, self.min_freq = discount, min_freq
        self._vocab: list[str] = [EOS, UNK]
        self._vocab_set = set(self._vocab)
        self._ngrams: Counter = Counter()
        # no counts yet: no tables (an order-10**6 model would otherwise build 10**6 empty ones)
        self._tables: dict[int, dict] = {}
        self.discounts: dict[int, float] = {}

    # ------------------------------------------------------------------ training
    def fit(self, sentences: Iterable[Sequence[str]]) -> "NGramLM":
        """Build the vocabulary and count the padded n-grams of ``sentences`` (token lists)."""
        sentences = [list(s) for s in sentences]
        freq = Counter(t for s in sentences for t in s)
        words = {t for t, c in freq.items() if c >= self.min_freq and t not in (BOS, EOS, UNK)}
        self._vocab = [EOS, UNK] + sorted(words)
        self._vocab_set = set(self._vocab)
        self._ngrams = Counter()
        self._require_memory(sum(len(s) + 1 for s in sentences))
        n = self.order
        for sent in sentences:
            padded = self._pad(sent)
            for i in range(n - 1, len(padded)):
                self._ngrams[tuple(padded[i - n + 1:i + 1])] += 1
        self._build()
        return self

    def _map(self, token: str) -> str:
        return token if token in self._vocab_set else UNK

    def _pad(self, sentence: Sequence[str]) -> list[str]:
        return [BOS] * (self.order - 1) + [self._map(t) for t in sentence] + [EOS]

    def _require_memory(self, n_events: int) -> None:
        """Refuse, before counting, an order whose tables cannot fit in memory
        (``minis2s.memory.ngram_bytes``: they grow with the order squared under Kneser-Ney)."""
        from ..memory import ngram_bytes, require
        require(ngram_bytes(n_events, self.order, self.smoothing == "kneser-ney"),
                f"an order-{self.order} {self.smoothing} n-gram model of {n_events:,} n-grams")

    def _build(self) -> None:
        """Derive the per-order tables from the raw highest-order counts ``self._ngrams``.

        ``self._tables[n]`` maps a context (tuple of ``n - 1`` tokens) to
        ``(counts: dict word -> count, total c(h), distinct N1+(h .))``.
        """
        self._require_memory(len(self._ngrams))
        N = self.order
        raw = {N: self._ngrams}
        if self.smoothing == "kneser-ney":
            for n in range(N - 1, 0, -1):           # raw count of the suffix at the same position
                raw[n] = Counter()
                for g, c in raw[n + 1].items():
                    raw[n][g[1:]] += c
            counts = {N: raw[N]}
            for n in range(N - 1, 0, -1):
                cont = Counter(g[1:] for g in raw[n + 1])           # N1+(. g)
                counts[n] = {g: (c if g[0] == BOS else cont[g]) for g, c in raw[n].items()}
            orders = range(1, N + 1)
        else:
            counts, orders = {N: raw[N]}, [N]
        self._tables: dict[int, dict] = {}
        self.discounts: dict[int, float] = {}
        for n in orders:
            table: dict = defaultdict(dict)
            for g, c in counts[n].items():
                table[g[:-1]][g[-1]] = c
            self._tables[n] = {h: (ws, sum(ws.values()), len(ws)) for h, ws in table.items()}
            if self.smoothing == "kneser-ney":
                self.discounts[n] = self._estimate_discount(counts[n].values())

    def _estimate_discount(self, values) -> float:
        if self.discount != "auto":
            return float(self.discount)
        hist = Counter(values)
        n1, n2 = hist.get(1, 0), hist.get(2, 0)
        return n1 / (n1 + 2 * n2) if n1 > 0 else 0.75     # no singletons: fall back to 0.75

    # ------------------------------------------------------------------ queries
    @property
    def vocab(self) -> list[str]:
        """The predicted vocabulary ``V``: ``</s>``, ``<unk>``, then the words, sorted."""
        return list(self._vocab)

    def _context(self, context: Sequence[str]) -> tuple:
        """The last ``order - 1`` tokens, ``<s>``-padded on the left; ``<s>`` stays ``<s>``."""
        n = self.order - 1
        if n == 0:
            return ()
        ctx = [t if t == BOS else self._map(t) for t in list(context)[-n:]]
        return tuple([BOS] * (n - len(ctx)) + ctx)

    def _prob(self, word: str, ctx: tuple) -> float:
        """``P(word | ctx)`` for a mapped word and a full mapped context."""
        V = len(self._vocab)
        if self.smoothing == "add-k":
            entry = self._tables.get(self.order, {}).get(ctx)
            c, total = (entry[0].get(word, 0), entry[1]) if entry else (0, 0)
            return (c + self.k) / (total + self.k * V)
        p = 1.0 / V                                  # P_0: uniform
        for n in range(1, self.order + 1):           # interpolate upwards, order 1 .. N
            entry = self._tables.get(n, {}).get(ctx[len(ctx) - (n - 1):] if n > 1 else ())
            if entry is None:                        # unseen context: keep the lower order
                continue
            counts, total, distinct = entry
            D = self.discounts[n]
            p = (max(counts.get(word, 0) - D, 0.0) + D * distinct * p) / total
        return p

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """``P(word | context)``: only the last ``order - 1`` context tokens are used, shorter
        contexts are padded with ``<s>``; unknown words and context tokens read as ``<unk>``."""
        return self._prob(self._map(word), self._context(context))

    def distribution(self, context: Sequence[str] = ()) -> dict[str, float]:
        """``{w: P(w | context)}`` over the whole predicted vocabulary (sums to 1)."""
        ctx = self._context(context)
        return {w: self._prob(w, ctx) for w in self._vocab}

    def generate(self, n: int = 1, max_len: int = 50, temperature: float = 1.0,
                 top_k: int | None = None, greedy: bool = False, prompt: Sequence[str] = (),
                 seed: int = 0) -> list[list[str]]:
        """``n`` token lists drawn one token at a time from ``P(w | last order - 1 tokens)``
        (the Markov assumption at work), each ending before ``</s>`` or after ``max_len``
        tokens, ``prompt`` included. ``temperature`` > 1 flattens the distribution
        (``p ** (1 / T)``, renormalised); ``top_k`` keeps the k most probable tokens; ``greedy``
        takes the most probable token at every step (the same sentence every time)."""
        return list(self.iter_generate(n, max_len, temperature, top_k, greedy, prompt, seed))

    def iter_generate(self, n: int = 1, max_len: int = 50, temperature: float = 1.0,
                      top_k: int | None = None, greedy: bool = False, prompt: Sequence[str] = (),
                      seed: int = 0):
        """The sentences of ``generate``, yielded one at a time as they are drawn."""
        import random
        rng = random.Random(seed)
        for _ in range(n):
            tokens = list(prompt)
            while len(tokens) < max_len:
                dist = sorted(self.distribution(tokens).items(), key=lambda kv: -kv[1])
                if greedy:
                    word = dist[0][0]
                else:
                    dist = dist[:top_k] if top_k else dist
                    weights = [p ** (1.0 / temperature) for _, p in dist]
                    word = rng.choices([w for w, _ in dist], weights=weights)[0]
                if word == EOS:
                    break
                tokens.append(word)
            yield tokens

    def logprob(self, sentence: Sequence[str]) -> float:
        """``log P(w_1 ... w_n </s>)`` in nats: the sum over the ``n + 1`` predicted tokens."""
        padded, n = self._pad(sentence), self.order
        return sum(math.log(self._prob(padded[i], tuple(padded[i - n + 1:i])))
                   for i in range(n - 1, len(padded)))

    def total_logprob(self, sentences: Iterable[Sequence[str]]) -> tuple[float, int]:
        """``(sum of logprob, number of predicted tokens)`` over ``sentences`` (EOS counted)."""
        lp, count = 0.0, 0
        for s in sentences:
            lp += self.logprob(s)
            count += len(s) + 1
        return lp, count

    def cross_entropy(self, sentences: Iterable[Sequence[str]]) -> float:
        """Nats per predicted token: ``-sum_s logprob(s) / sum_s (len(s) + 1)``."""
        lp, count = self.total_logprob(sentences)
        if count == 0:
            raise ValueError("no sentences to measure")
        return -lp / count

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """``exp(cross_entropy(sentences))`` (``inf`` past the float range)."""
        return _perplexity(self.cross_entropy(sentences))

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": _VERSION, "order": self.order,
                "smoothing": self.smoothing, "k": self.k, "discount": self.discount,
                "min_freq": self.min_freq, "vocab": self._vocab,
                "ngrams": [[*g, c] for g, c in sorted(self._ngrams.items())]}

    @classmethod
    def from_dict(cls, d: dict) -> "NGramLM":
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError("not a minis2s n-gram model (missing 'format': 'minis2s-ngram')")
        if d.get("version") != _VERSION:
            raise ValueError(f"n-gram model version {d.get('version')!r}; this code reads {_VERSION}")
        lm = cls(d["order"], d["smoothing"], d["k"], d["discount"], d["min_freq"])
        vocab = d["vocab"]
        if (not isinstance(vocab, list) or vocab[:2] != [EOS, UNK]
                or not all(isinstance(t, str) for t in vocab)):
            raise ValueError(f"'vocab' must be a list of strings starting with {EOS!r}, {UNK!r}")
        lm._vocab = list(vocab)
        lm._vocab_set = set(lm._vocab)
        if not isinstance(d["ngrams"], list) or not d["ngrams"]:
            raise ValueError("'ngrams' must be a non-empty list of rows (a fitted model counts at "
                             "least one n-gram)")
        lm._require_memory(len(d["ngrams"]))
        for row in d["ngrams"]:
            if (not isinstance(row, list) or len(row) != lm.order + 1
                    or not all(isinstance(t, str) for t in row[:-1])
                    or not isinstance(row[-1], int) or row[-1] < 1):
                raise ValueError(f"n-gram row {row!r} is not {lm.order} tokens and a count >= 1")
            lm._ngrams[tuple(row[:-1])] = int(row[-1])
        lm._build()
        return lm

    def save(self, path) -> None:
        """Write the model as JSON, atomically (``minis2s.checkpoint.atomic_write``: a temporary
        file renamed into place), so a crash leaves the old file or the new one, never half."""
        from ..checkpoint import atomic_write
        data = json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8")
        atomic_write(path, lambda f: f.write(data))

    @classmethod
    def load(cls, path) -> "NGramLM":
        """Read a model written by ``save``. A missing, truncated or malformed file raises
        ``minis2s.checkpoint.CheckpointError`` (a ``ValueError``) naming it."""
        from ..checkpoint import CheckpointError, read_json
        d = read_json(path)                          # CheckpointError for missing / broken JSON
        try:
            return cls.from_dict(d)
        except (ValueError, KeyError, TypeError) as exc:
            what = f"missing entry {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CheckpointError(f"{path}: not a usable n-gram model ({what})") from exc

    def __repr__(self) -> str:
        extra = f"k={self.k}" if self.smoothing == "add-k" else f"discount={self.discount!r}"
        return (f"NGramLM(order={self.order}, smoothing={self.smoothing!r}, {extra}, "
                f"min_freq={self.min_freq}, |V|={len(self._vocab)})")
