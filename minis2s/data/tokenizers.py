"""Tokenizers: turn a string into a list of token strings and back.

Two simple tokenizers live here:

* ``CharTokenizer`` (``name="char"``): every Unicode code point is one token; a space is the
  token ``" "``.  ``detokenize`` is ``"".join`` so the round trip is exact.
* ``SpaceTokenizer`` (``name="space"``): ``text.split()``; ``detokenize`` is ``" ".join``.
  Runs of whitespace collapse to a single space.

Every tokenizer has ``name``, ``tokenize``, ``detokenize``, ``to_dict`` (JSON-able, with a
``"name"`` key) and a ``from_dict`` classmethod.  ``TOKENIZERS`` maps names to classes, so
another module (e.g. a BPE tokenizer) can add itself with::

    from minis2s.data.tokenizers import TOKENIZERS
    TOKENIZERS["bpe"] = BPETokenizer

after which ``tokenizer_from_dict({"name": "bpe", ...})`` works.  ``get_tokenizer(name)``
builds a tokenizer that needs no training data (those whose class can be created with no
arguments).
"""
from __future__ import annotations


class Tokenizer:
    """Base class: subclasses set ``name`` and implement ``tokenize`` / ``detokenize``."""

    name: str = ""

    def tokenize(self, text: str) -> list[str]:
        raise NotImplementedError

    def detokenize(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        """A JSON-able description; ``tokenizer_from_dict`` rebuilds the tokenizer from it."""
        return {"name": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        return cls()

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CharTokenizer(Tokenizer):
    """One token per Unicode character: ``"ab c" -> ["a", "b", " ", "c"]``."""

    name = "char"

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def detokenize(self, tokens: list[str]) -> str:
        return "".join(tokens)


class SpaceTokenizer(Tokenizer):
    """Whitespace-separated tokens: ``"a  b\\tc" -> ["a", "b", "c"]``."""

    name = "space"

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    def detokenize(self, tokens: list[str]) -> str:
        return " ".join(tokens)


#: name -> tokenizer class; extend it to register new tokenizers.
TOKENIZERS: dict[str, type] = {
    CharTokenizer.name: CharTokenizer,
    SpaceTokenizer.name: SpaceTokenizer,
}


def _choices() -> str:
    return ", ".join(repr(n) for n in sorted(TOKENIZERS))


def get_tokenizer(name: str) -> Tokenizer:
    """A fresh tokenizer of the given name (``"char"``, ``"space"``, or any registered name).

    Raises ``ValueError`` naming the unknown name and the valid choices.
    """
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; valid choices: {_choices()}")
    return TOKENIZERS[name]()


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """Rebuild a tokenizer from ``tok.to_dict()``; ``ValueError`` if the name is unknown."""
    if not isinstance(d, dict) or "name" not in d:
        raise ValueError(f"a tokenizer description must be a dict with a 'name' key, got {d!r}")
    name = d["name"]
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; valid choices: {_choices()}")
    return TOKENIZERS[name].from_dict(d)
