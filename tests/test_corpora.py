"""Tests for minis2s.lm.corpora: determinism, document splits, nesting, exact entropy rates."""
import math
import sys

import numpy as np
import pytest

from minis2s.lm.corpora import (BUILTINS, CLOSE, FILLERS, OPEN, Corpus, _sentences, brackets,
                                is_well_nested, load_builtin, markov_source, pydoc_corpus)


@pytest.mark.parametrize("name", ["markov", "brackets", "pydoc"])
def test_builtins_are_deterministic_token_lists(name):
    a, b = load_builtin(name, seed=3), load_builtin(name, seed=3)
    assert isinstance(a, Corpus)
    assert (a.train, a.valid, a.test, a.info) == (b.train, b.valid, b.test, b.info)
    for split in (a.train, a.valid, a.test):
        assert split and all(isinstance(s, list) and all(isinstance(t, str) and t for t in s)
                             for s in split)
    if name != "pydoc":
        assert load_builtin(name, seed=4).train != a.train


def test_unknown_builtin_lists_the_names():
    with pytest.raises(ValueError) as err:
        load_builtin("wikipedia")
    for name in BUILTINS:
        assert name in str(err.value)


def test_pydoc_is_split_by_document():
    from pydoc_data.topics import topics
    corpus = pydoc_corpus()
    assert corpus.python_version == sys.version == corpus.info["python_version"]
    docs = corpus.info["documents"]
    train, valid, test = (set(docs[k]) for k in ("train", "valid", "test"))
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert train | valid | test == set(topics)
    names = sorted(topics)
    assert docs["test"] == names[0::10] and docs["valid"] == names[1::10]
    # each split holds exactly the sentences of its own documents
    for split in ("train", "valid", "test"):
        expected = [s for name in docs[split] for s in _sentences(topics[name], True)]
        assert getattr(corpus, split) == expected
    assert all(t == t.lower() for s in corpus.train[:200] for t in s)
    assert len(corpus.train) > 1000 and sum(map(len, corpus.train)) > 20000


def test_pydoc_sentences_skip_code_and_underlines():
    text = "Title\n*****\n\nThe first sentence.  The second one?\n\n   x = 1\n   y = 2\n"
    assert _sentences(text, True) == [["title"], ["the", "first", "sentence", "."],
                                      ["the", "second", "one", "?"]]
    assert _sentences("Don't Stop.", False) == [["Don't", "Stop", "."]]


@pytest.mark.parametrize("max_depth", [1, 3, 6])
def test_brackets_are_well_nested(max_depth):
    sents = brackets(seed=1, n_sentences=500, max_depth=max_depth)
    assert len(sents) == 500 and sents == brackets(seed=1, n_sentences=500, max_depth=max_depth)
    allowed = set(OPEN) | set(CLOSE) | set(FILLERS)
    deepest = 0
    for s in sents:
        assert s and set(s) <= allowed and is_well_nested(s)
        depth = 0
        for t in s:
            depth += (t in OPEN) - (t in CLOSE)
            deepest = max(deepest, depth)
    assert deepest == max_depth                    # the limit is reached but never passed
    assert all(t in allowed for t in " ".join(sents[0]).split())


def test_is_well_nested():
    assert is_well_nested("( [ a ] { < b > } )".split())
    assert not is_well_nested("( [ a ) ]".split())
    assert not is_well_nested("( a".split())
    assert not is_well_nested(") (".split())


def test_markov_source_table_is_a_distribution_and_sampling_is_seeded():
    src = markov_source(order=2, alphabet_size=5, seed=0)
    assert np.allclose(src.table.sum(axis=1), 1.0) and (src.table > 0).all()
    assert len(src.states) == 1 + 5 + 25
    assert src.sample(50, seed=7) == src.sample(50, seed=7)
    assert markov_source(seed=1).table.tolist() != src.table.tolist()
    s = src.sample(1, seed=0)[0]
    manual = sum(math.log(src.prob(w, (["<s>"] * 2 + s)[i:i + 2]))
                 for i, w in enumerate(s + ["</s>"]))
    assert src.logprob(s) == pytest.approx(manual)


@pytest.mark.parametrize("order,alphabet,seed", [(2, 5, 0), (1, 3, 1), (3, 4, 2)])
def test_exact_entropy_rate_matches_monte_carlo(order, alphabet, seed):
    src = markov_source(order=order, alphabet_size=alphabet, seed=seed)
    sample = src.sample(20000, seed=100 + seed)
    n = sum(len(s) + 1 for s in sample)
    estimate = -sum(src.logprob(s) for s in sample) / n
    assert estimate == pytest.approx(src.entropy_rate(), rel=0.01)
    assert n / len(sample) == pytest.approx(src.expected_length(), rel=0.03)


def test_markov_builtin_records_the_entropy_rate():
    c = load_builtin("markov", seed=0)
    src = markov_source(order=2, alphabet_size=5, seed=0)
    assert c.info["entropy_rate_nats"] == src.entropy_rate()
    assert c.info["best_perplexity"] == pytest.approx(math.exp(src.entropy_rate()))
    assert c.info["matching_ngram_order"] == 3
    assert (len(c.train), len(c.valid), len(c.test)) == (8000, 1000, 1000)
