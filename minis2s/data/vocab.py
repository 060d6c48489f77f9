"""Vocabulary: a two-way map between token strings and integer ids.

The first four ids are reserved for special tokens, in this order::

    PAD = 0  "<pad>"   fills the end of shorter sequences in a batch
    BOS = 1  "<s>"     begin of sentence (first decoder input)
    EOS = 2  "</s>"    end of sentence
    UNK = 3  "<unk>"   any token not in the vocabulary

Ordinary tokens follow, most frequent first (ties broken by the token string, so building is
deterministic).  A vocabulary is stored as JSON: ``{"format": "minis2s-vocab", "version": 1,
"itos": [...]}`` in UTF-8 with non-ASCII characters written as they are.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]

_FORMAT = "minis2s-vocab"
_VERSION = 1


class Vocab:
    """Token <-> id map.  ``itos[i]`` is the token of id ``i``; ``stoi[token]`` its id."""

    def __init__(self, itos: Sequence[str]):
        itos = list(itos)
        problem = _check_itos(itos)
        if problem:
            raise ValueError(f"invalid vocabulary: {problem}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(itos)}

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = 1,
              max_size: int | None = None) -> "Vocab":
        """Count the tokens of ``token_lists`` (an iterable of token lists) and keep those seen
        at least ``min_freq`` times; at most ``max_size`` ordinary tokens (specials not counted)
        are kept, the most frequent ones.  Tokens equal to a special token are ignored."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, got {max_size}")
        counts: Counter = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        for s in SPECIALS:
            counts.pop(s, None)
        kept = [t for t, c in counts.items() if c >= min_freq]
        kept.sort(key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size]
        return cls(SPECIALS + kept)

    # ------------------------------------------------------------------ mapping
    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"

    def encode(self, tokens: Iterable[str], add_bos: bool = False,
               add_eos: bool = False) -> list[int]:
        """Token strings -> ids (unknown tokens -> ``UNK``), optionally framed by BOS/EOS."""
        ids = [self.stoi.get(t, UNK) for t in tokens]
        if add_bos:
            ids.insert(0, BOS)
        if add_eos:
            ids.append(EOS)
        return ids

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        """Ids -> token strings.  With ``strip_special`` decoding stops at the first EOS and
        PAD/BOS are dropped (UNK stays as ``"<unk>"``); otherwise every id is mapped.
        ``ids`` may be any iterable of integers, e.g. a 1-D numpy array."""
        out = []
        n = len(self.itos)
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"id {i} is out of range for a vocabulary of size {n}")
            if strip_special:
                if i == EOS:
                    break
                if i in (PAD, BOS):
                    continue
            out.append(self.itos[i])
        return out

    def count_unknown(self, tokens: Iterable[str]) -> int:
        """How many of ``tokens`` are not in the vocabulary (would be encoded as UNK)."""
        return sum(1 for t in tokens if t not in self.stoi)

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict:
        return {"format": _FORMAT, "version": _VERSION, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        """Inverse of ``to_dict``; ``ValueError`` saying what is wrong for a bad dict."""
        if not isinstance(d, dict) or "itos" not in d:
            raise ValueError("a vocabulary must be a JSON object with an 'itos' list")
        return cls(d["itos"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=0) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        """Read a vocabulary saved by ``save``.  A file that is not UTF-8 JSON, lacks the
        special tokens in positions 0-3 or repeats a token raises ``ValueError`` naming it."""
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a vocabulary file (not UTF-8 text: {e.reason} "
                             f"at byte {e.start})") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a vocabulary file (not valid JSON: {e.msg} at line "
                             f"{e.lineno} column {e.colno})") from None
        if not isinstance(d, dict) or not isinstance(d.get("itos"), list):
            raise ValueError(f"{path}: not a vocabulary file (expected a JSON object with an "
                             f"'itos' list)")
        problem = _check_itos(d["itos"])
        if problem:
            raise ValueError(f"{path}: invalid vocabulary: {problem}")
        return cls(d["itos"])


def _check_itos(itos: list) -> str | None:
    """What is wrong with a token list, or None when it is a valid vocabulary."""
    for i, t in enumerate(itos):
        if not isinstance(t, str):
            return f"token at position {i} is {t!r}, not a string"
    if itos[:4] != SPECIALS:
        return (f"positions 0-3 must hold the special tokens {SPECIALS}, found {itos[:4]}")
    seen: dict[str, int] = {}
    for i, t in enumerate(itos):
        if t in seen:
            return f"duplicate token {t!r} at positions {seen[t]} and {i}"
        seen[t] = i
    return None
