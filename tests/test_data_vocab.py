"""Tests for minis2s.data.tokenizers and minis2s.data.vocab."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minis2s.data.tokenizers import (TOKENIZERS, CharTokenizer, SpaceTokenizer, Tokenizer,
                                     get_tokenizer, tokenizer_from_dict)
from minis2s.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab


# ----------------------------------------------------------------------------- tokenizers
def test_char_tokenizer_keeps_every_character():
    tok = CharTokenizer()
    assert tok.name == "char"
    assert tok.tokenize("ab c") == ["a", "b", " ", "c"]
    assert tok.tokenize("2026년") == ["2", "0", "2", "6", "년"]
    assert tok.detokenize(tok.tokenize("  x  y ")) == "  x  y "


def test_space_tokenizer_splits_on_whitespace():
    tok = SpaceTokenizer()
    assert tok.name == "space"
    assert tok.tokenize("one  hundred\tfive ") == ["one", "hundred", "five"]
    assert tok.detokenize(["twenty-one", "x"]) == "twenty-one x"
    assert tok.tokenize("") == []


def test_get_tokenizer_and_round_trip_through_dict():
    for name, cls in [("char", CharTokenizer), ("space", SpaceTokenizer)]:
        tok = get_tokenizer(name)
        assert isinstance(tok, cls)
        d = tok.to_dict()
        assert d["name"] == name
        json.dumps(d)                                  # JSON-able
        assert tokenizer_from_dict(d) == tok


def test_unknown_tokenizer_names_the_choices():
    with pytest.raises(ValueError) as e:
        get_tokenizer("wordpiece")
    assert "wordpiece" in str(e.value) and "'char'" in str(e.value) and "'space'" in str(e.value)
    with pytest.raises(ValueError, match="nope"):
        tokenizer_from_dict({"name": "nope"})
    with pytest.raises(ValueError):
        tokenizer_from_dict({"merges": []})


def test_registry_is_extensible():
    class Upper(Tokenizer):
        name = "upper-test"

        def __init__(self, sep="|"):
            self.sep = sep

        def tokenize(self, text):
            return text.upper().split(self.sep)

        def detokenize(self, tokens):
            return self.sep.join(tokens)

        def to_dict(self):
            return {"name": self.name, "sep": self.sep}

        @classmethod
        def from_dict(cls, d):
            return cls(d["sep"])

    TOKENIZERS[Upper.name] = Upper
    try:
        tok = tokenizer_from_dict({"name": "upper-test", "sep": "/"})
        assert tok.tokenize("a/b") == ["A", "B"]
        assert isinstance(get_tokenizer("upper-test"), Upper)
    finally:
        del TOKENIZERS[Upper.name]


# ----------------------------------------------------------------------------- vocab build
def test_specials_are_the_first_four_ids():
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
    v = Vocab.build([])
    assert v.itos == SPECIALS and len(v) == 4
    assert [v.stoi[s] for s in SPECIALS] == [0, 1, 2, 3]


def test_build_orders_by_frequency_then_token():
    v = Vocab.build([["b", "a", "c"], ["c", "b", "d"], ["c"]])
    # c: 3, b: 2, a: 1, d: 1 (tie broken alphabetically)
    assert v.itos[4:] == ["c", "b", "a", "d"]
    assert v.stoi["c"] == 4 and len(v) == 8


def test_build_min_freq_and_max_size():
    data = [list("aaabbc")]
    assert Vocab.build(data, min_freq=2).itos[4:] == ["a", "b"]
    assert Vocab.build(data, max_size=1).itos[4:] == ["a"]
    assert Vocab.build(data, max_size=0).itos == SPECIALS
    assert Vocab.build(data, min_freq=4).itos == SPECIALS
    with pytest.raises(ValueError):
        Vocab.build(data, min_freq=0)


def test_build_ignores_tokens_that_look_like_specials():
    v = Vocab.build([["<pad>", "x", "</s>"]])
    assert v.itos == SPECIALS + ["x"]


def test_build_is_deterministic_regardless_of_input_order():
    a = Vocab.build([["x", "y", "z"], ["y"]])
    b = Vocab.build([["y"], ["z", "y", "x"]])
    assert a == b


# ----------------------------------------------------------------------------- encode/decode
def test_encode_unknown_and_framing():
    v = Vocab.build([["a", "b"]])
    assert v.encode(["a", "b", "zz"]) == [v.stoi["a"], v.stoi["b"], UNK]
    assert v.encode(["a"], add_bos=True, add_eos=True) == [BOS, v.stoi["a"], EOS]
    assert v.encode([]) == []
    assert v.count_unknown(["a", "q", "r", "b", "q"]) == 3
    assert "a" in v and "q" not in v


def test_decode_strips_specials_and_stops_at_eos():
    v = Vocab.build([["a", "b"]])
    a, b = v.stoi["a"], v.stoi["b"]
    assert v.decode([BOS, a, b, EOS, a, PAD]) == ["a", "b"]
    assert v.decode([a, PAD, b]) == ["a", "b"]
    assert v.decode([a, UNK]) == ["a", "<unk>"]
    assert v.decode([BOS, a, EOS, PAD], strip_special=False) == ["<s>", "a", "</s>", "<pad>"]
    assert v.decode(np.array([a, b, EOS], dtype=np.int64)) == ["a", "b"]
    with pytest.raises(ValueError, match="out of range"):
        v.decode([len(v)])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.text(min_size=1, max_size=4), max_size=8), min_size=1, max_size=6))
def test_encode_decode_round_trip_on_known_tokens(token_lists):
    v = Vocab.build(token_lists)
    for tokens in token_lists:
        if any(t in SPECIALS for t in tokens):
            continue
        ids = v.encode(tokens, add_bos=True, add_eos=True)
        assert v.decode(ids) == tokens
        assert v.count_unknown(tokens) == 0


# ----------------------------------------------------------------------------- storage
def test_save_load_round_trip_keeps_unicode_readable(tmp_path):
    v = Vocab.build([list("2026년 11월"), ["twenty-one", "é"]])
    path = tmp_path / "vocab.json"
    v.save(path)
    text = path.read_text(encoding="utf-8")
    assert "년" in text and "\\u" not in text          # ensure_ascii=False
    w = Vocab.load(path)
    assert w == v and w.stoi == v.stoi
    assert Vocab.from_dict(v.to_dict()) == v


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


def test_load_rejects_non_json(tmp_path):
    p = _write(tmp_path / "v.json", b"<pad>\n<s>\n")
    with pytest.raises(ValueError) as e:
        Vocab.load(p)
    assert str(p) in str(e.value) and "JSON" in str(e.value)


def test_load_rejects_non_utf8(tmp_path):
    p = _write(tmp_path / "v.json", b'{"itos": ["\xff"]}')
    with pytest.raises(ValueError) as e:
        Vocab.load(p)
    assert str(p) in str(e.value) and "UTF-8" in str(e.value)


def test_load_rejects_wrong_structure(tmp_path):
    p = _write(tmp_path / "v.json", b'["<pad>", "<s>", "</s>", "<unk>"]')
    with pytest.raises(ValueError, match="itos") as e:
        Vocab.load(p)
    assert str(p) in str(e.value)


def test_load_rejects_missing_specials(tmp_path):
    p = _write(tmp_path / "v.json", json.dumps({"itos": ["<s>", "<pad>", "</s>", "<unk>", "a"]})
               .encode())
    with pytest.raises(ValueError) as e:
        Vocab.load(p)
    assert str(p) in str(e.value) and "special" in str(e.value)


def test_load_rejects_duplicates(tmp_path):
    p = _write(tmp_path / "v.json", json.dumps({"itos": SPECIALS + ["a", "b", "a"]}).encode())
    with pytest.raises(ValueError) as e:
        Vocab.load(p)
    msg = str(e.value)
    assert str(p) in msg and "duplicate" in msg and "'a'" in msg and "4" in msg and "6" in msg


def test_constructor_validates():
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(SPECIALS + ["x", "x"])
    with pytest.raises(ValueError, match="special"):
        Vocab(["x"])
    with pytest.raises(ValueError, match="not a string"):
        Vocab(SPECIALS + [5])
