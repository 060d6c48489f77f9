"""Built-in corpora for language modelling, made or read locally (no network).

* ``"markov"``: sentences from a random but fixed Markov source whose entropy rate is known
  exactly, so a model's cross-entropy can be compared with the best achievable.
* ``"brackets"``: a Dyck-like language of nested ``( [ { <`` brackets with filler words; the
  right closing bracket depends on an opening one arbitrarily far back, which no fixed-order
  n-gram can see.
* ``"pydoc"``: the English reference text shipped with CPython (``pydoc_data.topics``), split
  into train/valid/test by document.

``load_builtin(name, seed=0)`` returns a ``Corpus(train, valid, test, info)`` whose splits are
lists of sentences, each a list of token strings.
"""
from __future__ import annotations

import bisect
import math
import re
import string
import sys
from dataclasses import dataclass, field
from itertools import product

import numpy as np

BOS, EOS = "<s>", "</s>"


@dataclass
class Corpus:
    """Three splits of token-list sentences and a JSON-able ``info`` dict."""

    train: list
    valid: list
    test: list
    info: dict = field(default_factory=dict)

    @property
    def python_version(self) -> str | None:
        """``sys.version`` of the Python whose files made the corpus (pydoc), else None."""
        return self.info.get("python_version")


# ------------------------------------------------------------------------------ markov
class MarkovSource:
    """A Markov chain of order ``k`` over an alphabet, with ``</s>`` as one of its outputs.

    The state is the last ``k`` tokens, ``<s>``-padded on the left; a sentence starts in the
    state ``(<s>,) * k`` and each step emits a letter or ``</s>`` from the state's row of the
    transition table (the sentence ends at ``</s>``).  This is exactly what an order ``k + 1``
    n-gram model with ``<s>`` padding assumes, so that model is the matching one.

    Each row is ``(1 - e) * Dirichlet(0.5, ..., 0.5)`` over the letters and ``e`` for ``</s>``,
    with ``e ~ Uniform(0.03, 0.12)`` per state (mean sentence length about 15), all drawn from
    ``numpy.random.default_rng(seed)``.

    Exact entropy rate (``entropy_rate()``, nats per predicted token, ``</s>`` counted). A
    sentence is a run of an absorbing chain: let ``Q[s, s']`` be the probability of going from
    transient state ``s`` to ``s'`` by emitting a letter (``</s>`` absorbs), and ``e_0`` the
    start state.  The expected number of visits to each state per sentence is::

        v = e_0 (I - Q)^{-1}        i.e. solve  (I - Q)^T v = e_0

    Every visit emits exactly one token, so the expected tokens per sentence are ``L = sum_s
    v_s`` and the expected total log-loss per sentence is ``sum_s v_s H(row_s)``. Over a corpus
    of many sentences (renewal-reward theorem) the per-token cross-entropy of the true model
    converges to::

        H_rate = sum_s v_s H(row_s) / sum_s v_s

    which no model can beat in expectation; ``exp(H_rate)`` is the best perplexity.
    """

    def __init__(self, order: int = 2, alphabet_size: int = 5, seed: int = 0):
        if order < 1 or alphabet_size < 1:
            raise ValueError("order and alphabet_size must be >= 1")
        self.order, self.seed = order, seed
        self.alphabet = (list(string.ascii_lowercase[:alphabet_size]) if alphabet_size <= 26
                         else [f"x{i}" for i in range(alphabet_size)])
        self.symbols = self.alphabet + [EOS]           # what a state can emit
        rng = np.random.default_rng(seed)
        # states: (<s>,)*(k-j) followed by j letters, j = 0..k
        self.states = [(BOS,) * (order - j) + tail
                       for j in range(order + 1) for tail in product(self.alphabet, repeat=j)]
        self.index = {s: i for i, s in enumerate(self.states)}
        m = len(self.alphabet)
        self.table = np.empty((len(self.states), m + 1))
        for i in range(len(self.states)):
            e = rng.uniform(0.03, 0.12)
            self.table[i, :m] = (1 - e) * rng.dirichlet(np.full(m, 0.5))
            self.table[i, m] = e
        self._cum = [list(np.cumsum(row)) for row in self.table]

    def _next(self, state: tuple, token: str) -> tuple:
        return (state + (token,))[1:]

    def prob(self, word: str, context=()) -> float:
        """True ``P(word | context)`` (the last ``order`` tokens, ``<s>``-padded)."""
        ctx = tuple(context)[-self.order:] if self.order else ()
        state = (BOS,) * (self.order - len(ctx)) + ctx
        if word not in self.symbols or state not in self.index:
            return 0.0
        return float(self.table[self.index[state], self.symbols.index(word)])

    def logprob(self, sentence) -> float:
        """``log P(sentence </s>)`` in nats under the source."""
        state, lp = (BOS,) * self.order, 0.0
        for w in list(sentence) + [EOS]:
            lp += math.log(self.table[self.index[state], self.symbols.index(w)])
            state = self._next(state, w)
        return lp

    def sample(self, n_sentences: int, seed=None, rng=None) -> list[list[str]]:
        """``n_sentences`` sentences (token lists without ``</s>``), from ``rng`` or ``seed``."""
        rng = rng if rng is not None else np.random.default_rng(seed)
        out, m = [], len(self.alphabet)
        for _ in range(n_sentences):
            sent = []
            state = (BOS,) * self.order
            while True:
                s = self.index[state]
                j = min(bisect.bisect_right(self._cum[s], rng.random()), m)
                if j == m:
                    break
                sent.append(self.alphabet[j])
                state = self._next(state, self.alphabet[j])
            out.append(sent)
        return out

    def _visits(self) -> np.ndarray:
        """Expected visits per sentence to each state: ``(I - Q)^T v = e_0``."""
        S = len(self.states)
        Q = np.zeros((S, S))
        for i, state in enumerate(self.states):
            for j, a in enumerate(self.alphabet):
                Q[i, self.index[self._next(state, a)]] += self.table[i, j]
        e0 = np.zeros(S)
        e0[self.index[(BOS,) * self.order]] = 1.0
        return np.linalg.solve((np.eye(S) - Q).T, e0)

    def expected_length(self) -> float:
        """Expected predicted tokens per sentence (letters + ``</s>``): ``sum_s v_s``."""
        return float(self._visits().sum())

    def entropy_rate(self) -> float:
        """Exact nats per predicted token: ``sum_s v_s H(row_s) / sum_s v_s``."""
        v = self._visits()
        row_h = -(self.table * np.log(self.table)).sum(axis=1)
        return float(v @ row_h / v.sum())


def markov_source(order: int = 2, alphabet_size: int = 5, seed: int = 0) -> MarkovSource:
    """A ``MarkovSource`` of the given order (context length) and alphabet, fixed by ``seed``."""
    return MarkovSource(order, alphabet_size, seed)


# ------------------------------------------------------------------------------ brackets
OPEN, CLOSE = "([{<", ")]}>"
FILLERS = ("a", "b", "c", "d")


def brackets(seed: int = 0, n_sentences: int = 1000, max_depth: int = 5) -> list[list[str]]:
    """Sentences of a Dyck-like language over ``( [ { <`` with filler words ``a b c d``.

    A sentence is a sequence of 1-3 items; an item is a filler word or, below ``max_depth``
    levels of nesting, a bracket pair of a random type around a further sequence of 1-3 items.
    A closing bracket must match the type of its opening one however far back it is.  Tokens
    are single characters; ``" ".join(sentence)`` is the text.
    """
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, got {max_depth}")
    rng = np.random.default_rng(seed)

    def items(depth: int, out: list) -> None:
        for _ in range(int(rng.integers(1, 4))):
            p_open = 0.9 if depth == 0 else 0.55
            if depth < max_depth and rng.random() < p_open:
                b = int(rng.integers(len(OPEN)))
                out.append(OPEN[b])
                items(depth + 1, out)
                out.append(CLOSE[b])
            else:
                out.append(FILLERS[int(rng.integers(len(FILLERS)))])

    sentences = []
    for _ in range(n_sentences):
        sent: list = []
        items(0, sent)
        sentences.append(sent)
    return sentences


def is_well_nested(tokens) -> bool:
    """True if every bracket in ``tokens`` is closed by its own type in last-opened order."""
    stack = []
    for t in tokens:
        if t in OPEN:
            stack.append(CLOSE[OPEN.index(t)])
        elif t in CLOSE and (not stack or stack.pop() != t):
            return False
    return not stack


# ------------------------------------------------------------------------------ pydoc
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_RULE = re.compile(r"^\s*([*=\-~^])\1+\s*$")       # heading underlines: ***** ===== -----


def _sentences(text: str, lowercase: bool) -> list[list[str]]:
    """Prose sentences of one pydoc topic: paragraphs split at blank lines, paragraphs whose
    lines are all indented 3+ spaces (code, grammar rules, examples) and heading underlines
    dropped, sentences split after ``. ! ?``, words by the regex ``\\w+('\\w+)?|[^\\w\\s]``."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [l for l in para.split("\n") if l.strip() and not _RULE.match(l)]
        if not lines or all(l.startswith("   ") for l in lines):
            continue
        prose = " ".join(l.strip() for l in lines)
        if lowercase:
            prose = prose.lower()
        for sent in _SENTENCE_END.split(prose):
            words = _WORD.findall(sent)
            if words:
                out.append(words)
    return out


def pydoc_corpus(lowercase: bool = True) -> Corpus:
    """The English text of ``pydoc_data.topics.topics`` (CPython's help topics).

    Split by document: topic names sorted, every 10th (index % 10 == 0) to test, the next
    (index % 10 == 1) to valid, the rest to train -- deterministic for a given Python, whose
    ``sys.version`` is recorded in ``info["python_version"]`` (the text changes between
    versions).  ``info["documents"]`` lists each split's topics.
    """
    from pydoc_data.topics import topics
    splits = {"train": [], "valid": [], "test": []}
    docs = {"train": [], "valid": [], "test": []}
    for i, name in enumerate(sorted(topics)):
        split = "test" if i % 10 == 0 else "valid" if i % 10 == 1 else "train"
        docs[split].append(name)
        splits[split].extend(_sentences(topics[name], lowercase))
    info = {"name": "pydoc", "python_version": sys.version, "lowercase": lowercase,
            "documents": docs, **{f"{k}_sentences": len(v) for k, v in splits.items()},
            "train_tokens": sum(len(s) for s in splits["train"])}
    return Corpus(splits["train"], splits["valid"], splits["test"], info)


# ------------------------------------------------------------------------------ registry
BUILTINS = ("pydoc", "markov", "brackets")


def load_builtin(name: str, seed: int = 0) -> Corpus:
    """``Corpus`` for ``"pydoc"``, ``"markov"`` (8000/1000/1000 sentences of an order-2 source
    over 5 letters) or ``"brackets"`` (5000/500/500 sentences, depth <= 5).  ``seed`` fixes
    the generated corpora (pydoc does not depend on it)."""
    if name == "pydoc":
        return pydoc_corpus()
    if name == "markov":
        src = markov_source(order=2, alphabet_size=5, seed=seed)
        sents = src.sample(10000, rng=np.random.default_rng([seed, 1]))
        h = src.entropy_rate()
        info = {"name": "markov", "seed": seed, "order": src.order,
                "alphabet_size": len(src.alphabet), "matching_ngram_order": src.order + 1,
                "entropy_rate_nats": h, "best_perplexity": math.exp(h),
                "expected_length": src.expected_length()}
        return Corpus(sents[:8000], sents[8000:9000], sents[9000:], info)
    if name == "brackets":
        sents = brackets(seed=seed, n_sentences=6000, max_depth=5)
        info = {"name": "brackets", "seed": seed, "max_depth": 5}
        return Corpus(sents[:5000], sents[5000:5500], sents[5500:], info)
    raise ValueError(f"unknown built-in corpus {name!r}; choose one of {', '.join(BUILTINS)}")
