"""Byte-pair encoding (Sennrich et al., 2016), written from the algorithm.

Pre-tokenization
----------------
Text is cut into *chunks* with one regular expression (in the spirit of GPT-2's)::

    ␣?letters | ␣?digits | ␣?other-symbols | whitespace-run-not-before-a-word | whitespace-run

A single space before a word belongs to that word (``" the"``), other whitespace forms its own
chunks.  Every character falls in exactly one alternative, so the chunks partition the text and
``"".join(chunks) == text`` for any Unicode string.  Tokens are substrings of one chunk, so
``detokenize`` is ``"".join(tokens)`` and ``detokenize(tokenize(text)) == text`` always: multiple
spaces, tabs, newlines, leading/trailing whitespace, emoji and characters never seen in training
(which simply stay single-character tokens) all come back exactly.  Token strings therefore may
contain spaces: ``" the"`` is one token.

Training
--------
Each distinct chunk starts as its sequence of characters, weighted by its frequency.  Then, up
to ``num_merges`` times: count every adjacent symbol pair (weighted), take the most frequent
pair -- ties broken by the lexicographically smallest ``(left, right)`` pair, so training is
deterministic -- and replace it everywhere by the merged symbol.  Training stops early when no
pair occurs at least ``min_pair_freq`` (default 2) times.  Pair counts are updated only for the
chunks that contain the merged pair, and the best pair comes from a heap with stale entries
skipped, so a merge costs time proportional to the chunks it touches.

Encoding
--------
A chunk's symbols are merged by *rank*: repeatedly find the adjacent pair learnt earliest and
merge all its (left-to-right, non-overlapping) occurrences, until no learnt pair is left.  This
replays training's merges in order.  Results are cached per chunk.
"""
from __future__ import annotations

import heapq
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

from .tokenizers import TOKENIZERS, Tokenizer

_CHUNK = re.compile(r" ?[^\W\d_]+| ?\d+| ?(?:[^\w\s]|_)+|\s+(?!\S)|\s+")
_FORMAT, _VERSION = "minis2s-bpe", 1
_CACHE_SIZE = 100_000


def pretokenize(text: str) -> list[str]:
    """The chunks of ``text`` (see the module docstring); they concatenate back to ``text``."""
    return _CHUNK.findall(text)


def _merge_word(word: tuple, pair: tuple, new: str) -> tuple:
    """Replace the non-overlapping occurrences of ``pair`` in ``word``, left to right."""
    out, i, a, b = [], 0, pair[0], pair[1]
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _pairs(word: tuple) -> Counter:
    return Counter(zip(word, word[1:]))


class BPETokenizer(Tokenizer):
    """Subword tokenizer from learnt merges; ``BPETokenizer.train(texts, num_merges)``."""

    name = "bpe"

    def __init__(self, merges: Iterable = ()):
        self.merges: list[tuple[str, str]] = [(str(a), str(b)) for a, b in merges]
        self.ranks = {pair: r for r, pair in enumerate(self.merges)}
        self._cache: dict[str, tuple] = {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, texts, num_merges: int, min_pair_freq: int = 2) -> "BPETokenizer":
        """Learn at most ``num_merges`` merges from ``texts`` (an iterable of strings, or one
        string).  Deterministic: the same texts always give the same merges."""
        if num_merges < 0:
            raise ValueError(f"num_merges must be >= 0, got {num_merges}")
        if isinstance(texts, str):
            texts = [texts]
        chunk_freq = Counter(c for text in texts for c in pretokenize(text))
        words = [tuple(chunk) for chunk in sorted(chunk_freq)]
        freqs = [chunk_freq[chunk] for chunk in sorted(chunk_freq)]
        pair_count: Counter = Counter()
        where: dict[tuple, set] = defaultdict(set)      # pair -> ids of the words holding it
        for i, w in enumerate(words):
            for pair, k in _pairs(w).items():
                pair_count[pair] += k * freqs[i]
                where[pair].add(i)
        heap = [(-c, pair) for pair, c in pair_count.items()]
        heapq.heapify(heap)
        merges = []
        while len(merges) < num_merges and heap:
            neg, pair = heapq.heappop(heap)
            if pair_count.get(pair, 0) != -neg:         # stale entry: the count has changed
                continue
            if -neg < min_pair_freq:
                break
            merges.append(pair)
            new = pair[0] + pair[1]
            changed = set()
            for i in sorted(where.pop(pair, ())):
                old = words[i]
                merged = _merge_word(old, pair, new)
                if merged == old:
                    continue
                for p, k in _pairs(old).items():        # take the word's old pairs out ...
                    pair_count[p] -= k * freqs[i]
                    changed.add(p)
                for p, k in _pairs(merged).items():     # ... and its new pairs in
                    pair_count[p] += k * freqs[i]
                    where[p].add(i)
                    changed.add(p)
                words[i] = merged
            for p in changed:
                c = pair_count[p]
                if c > 0:
                    heapq.heappush(heap, (-c, p))
                else:
                    del pair_count[p]
                    where.pop(p, None)
        return cls(merges)

    # ------------------------------------------------------------------ encoding
    def _encode_chunk(self, chunk: str) -> tuple:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        word = tuple(chunk)
        while len(word) > 1:
            best = min(zip(word, word[1:]), key=lambda p: self.ranks.get(p, len(self.ranks)))
            if best not in self.ranks:
                break
            word = _merge_word(word, best, best[0] + best[1])
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[chunk] = word
        return word

    def tokenize(self, text: str) -> list[str]:
        """Subword strings whose concatenation is ``text``."""
        out: list[str] = []
        for chunk in pretokenize(text):
            out.extend(self._encode_chunk(chunk))
        return out

    def detokenize(self, tokens) -> str:
        """``"".join(tokens)``: the exact inverse of ``tokenize``."""
        return "".join(tokens)

    encode = tokenize
    decode = detokenize

    @property
    def vocab(self) -> list[str]:
        """The merged symbols, in the order learnt (single characters are implicit)."""
        return [a + b for a, b in self.merges]

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict:
        return {"name": self.name, "format": _FORMAT, "version": _VERSION,
                "merges": [list(p) for p in self.merges]}

    @classmethod
    def from_dict(cls, d: dict) -> "BPETokenizer":
        if not isinstance(d, dict) or d.get("name") != cls.name:
            raise ValueError(f"not a BPE tokenizer description: {d!r:.80}")
        if d.get("version", _VERSION) != _VERSION:
            raise ValueError(f"BPE tokenizer version {d.get('version')!r}; this code reads {_VERSION}")
        merges = d.get("merges", [])
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in merges):
            raise ValueError("BPE merges must be pairs of strings")
        return cls(merges)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=True), encoding="utf-8")

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __repr__(self) -> str:
        return f"BPETokenizer(<{len(self.merges)} merges>)"


TOKENIZERS[BPETokenizer.name] = BPETokenizer
