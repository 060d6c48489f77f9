"""Tests for minis2s.data.bpe: exact round trips, deterministic merges, saving."""
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minis2s.data.bpe import BPETokenizer, pretokenize
from minis2s.data.tokenizers import tokenizer_from_dict


def _texts():
    from pydoc_data.topics import topics
    return [topics[name] for name in sorted(topics)[:30]]


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(_texts(), 500)


TRICKY = ["", " ", "  ", "\t", "\n\n", " a", "a ", "  two  spaces  ", "tab\there", "line\nbreak\r\n",
          " \t\n mixed \u00a0nbsp", "emoji 🦊🐍 and ZWJ 👩‍💻", "ünïcödé café", "日本語のテキスト",
          "combining e\u0301 marks", "snake_case __init__ x_1", "3.14159 1e-10 0xFF", "▁already▁",
          "unseen ⅀ ∰ ꙮ", "<s> </s> <unk>", "'quoted' \"text\" (parens) [x]{y}"]


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_on_tricky_strings(tok, text):
    tokens = tok.tokenize(text)
    assert tok.detokenize(tokens) == text
    assert tok.decode(tok.encode(text)) == text
    assert all(tokens)                                   # no empty tokens


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_round_trip_on_any_text(tok, text):
    assert "".join(pretokenize(text)) == text
    assert tok.detokenize(tok.tokenize(text)) == text


def test_unseen_characters_are_single_tokens(tok):
    assert tok.tokenize("ꙮ⅀") == ["ꙮ", "⅀"]


def test_merges_by_hand():
    # chunks of "ab ab ab": "ab" once, " ab" twice.  Pairs: (a, b) 3, (" ", a) 2.
    # merge 1: (a, b) -> chunks "ab", " "+"ab" x2: pairs (" ", "ab") 2.  merge 2: (" ", "ab").
    assert BPETokenizer.train(["ab ab ab"], 10).merges == [("a", "b"), (" ", "ab")]
    # every pair of "ab cd" occurs once: nothing reaches the default min_pair_freq = 2 ...
    assert BPETokenizer.train(["ab cd"], 10).merges == []
    # ... and with min_pair_freq=1 ties go to the lexicographically smallest pair (" " < "a"):
    # (" ", c), then (" c", d) since " c" < "a", then (a, b)
    assert BPETokenizer.train(["ab cd"], 10, min_pair_freq=1).merges == \
        [(" ", "c"), (" c", "d"), ("a", "b")]


def _naive_train(texts, num_merges):
    """The textbook loop: recount every pair after each merge (slow, obviously correct)."""
    from collections import Counter
    words = Counter(tuple(c) for t in texts for c in pretokenize(t))
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for w, f in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += f
        if not pairs or max(pairs.values()) < 2:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        new_words = Counter()
        for w, f in words.items():
            out, i = [], 0
            while i < len(w):
                if w[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += f
        words = new_words
    return merges


def test_incremental_training_equals_the_textbook_loop():
    texts = [t[:3000] for t in _texts()[:6]] + ["aaaa aaa aa a", "abababab ba ba"]
    assert BPETokenizer.train(texts, 150).merges == _naive_train(texts, 150)


def test_training_is_deterministic_and_order_independent():
    texts = _texts()
    a = BPETokenizer.train(texts, 300)
    b = BPETokenizer.train(texts, 300)
    shuffled = texts[:]
    random.Random(0).shuffle(shuffled)
    c = BPETokenizer.train(shuffled, 300)
    assert a.merges == b.merges == c.merges
    assert a == b


def test_number_of_merges_is_at_most_num_merges():
    texts = _texts()
    for n in (0, 1, 10, 200):
        assert len(BPETokenizer.train(texts, n).merges) == n
    small = BPETokenizer.train(["low lower lowest"], 1000)
    assert 0 < len(small.merges) < 1000                  # stops when no pair repeats
    with pytest.raises(ValueError):
        BPETokenizer.train(texts, -1)


def test_frequent_words_become_single_tokens(tok):
    for word in (" the", " of", " is", " object"):
        assert tok.tokenize(word) == [word]
    assert tok.tokenize("the object of the") == ["the", " object", " of", " the"]
    untrained = BPETokenizer.train(_texts(), 5)
    assert untrained.tokenize(" object") != [" object"]


def test_more_merges_give_fewer_tokens():
    text = " ".join(_texts()[:5])
    lengths = [len(BPETokenizer.train(_texts(), n).tokenize(text)) for n in (0, 50, 500)]
    assert lengths[0] == len(text) and lengths[0] > lengths[1] > lengths[2]


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "bpe.json"
    tok.save(path)
    d = json.loads(path.read_text(encoding="utf-8"))
    assert d["name"] == "bpe" and len(d["merges"]) == len(tok.merges)
    back = BPETokenizer.load(path)
    assert back == tok and back.merges == tok.merges
    text = "The object of the assignment is 42 🦊"
    assert back.tokenize(text) == tok.tokenize(text)
    again = tokenizer_from_dict(tok.to_dict())           # registered under the name "bpe"
    assert isinstance(again, BPETokenizer) and again.merges == tok.merges
    assert BPETokenizer.from_dict(json.loads(json.dumps(tok.to_dict()))) == tok
    with pytest.raises(ValueError):
        BPETokenizer.from_dict({"name": "char"})
    with pytest.raises(ValueError):
        BPETokenizer.from_dict({"name": "bpe", "merges": [["a"]]})


def test_single_string_and_vocab():
    t = BPETokenizer.train("aaaa aaaa", 3)
    assert t.name == "bpe" and t.vocab == [a + b for a, b in t.merges]
    assert t.tokenize("aaaa") == ["aaaa"]
