"""Tests for minis2s.metrics: information quantities, corpus sums, accuracy and BLEU."""
import math

import numpy as np
import pytest

from minis2s.metrics import (CorpusStats, bleu_details, corpus_bleu, cross_entropy,
                             cross_entropy_from_perplexity, entropy, exact_match,
                             information_content, kl_divergence, perplexity, token_accuracy)


# ------------------------------------------------------------------------------ distributions
def test_information_content():
    assert information_content(1.0) == 0.0
    assert information_content(0.5, base=2) == pytest.approx(1.0)
    assert information_content(1 / 8, base=2) == pytest.approx(3.0)
    assert information_content(0.0) == math.inf
    with pytest.raises(ValueError):
        information_content(1.5)


def test_fair_die_entropy_and_perplexity():
    die = [1 / 6] * 6
    assert entropy(die) == pytest.approx(math.log(6), abs=1e-12)
    assert perplexity(entropy(die)) == pytest.approx(6.0, abs=1e-12)
    assert entropy(die, base=2) == pytest.approx(math.log2(6), abs=1e-12)


def test_entropy_flat_high_sharp_low_and_zero_terms():
    flat, sharp = [0.25] * 4, [0.97, 0.01, 0.01, 0.01]
    assert entropy(flat) > entropy(sharp) > 0
    assert entropy([1.0, 0.0, 0.0]) == 0.0                   # 0 log 0 = 0
    assert entropy([0.5, 0.5, 0.0]) == pytest.approx(math.log(2))
    with pytest.raises(ValueError):
        entropy([0.5, -0.5])


def test_cross_entropy_and_kl():
    p, q = np.array([0.5, 0.25, 0.25]), np.array([0.25, 0.5, 0.25])
    # H(p, q) = -(0.5 log 1/4 + 0.25 log 1/2 + 0.25 log 1/4) = (1 + 0.25 + 0.5) log 2 = 1.75 log 2
    # H(p)    = -(0.5 log 1/2 + 0.25 log 1/4 + 0.25 log 1/4) = (0.5 + 0.5 + 0.5) log 2 = 1.5 log 2
    # KL = 0.25 log 2
    assert cross_entropy(p, q) == pytest.approx(1.75 * math.log(2))
    assert entropy(p) == pytest.approx(1.5 * math.log(2))
    assert kl_divergence(p, q) == pytest.approx(0.25 * math.log(2))
    assert kl_divergence(p, q) == pytest.approx(cross_entropy(p, q) - entropy(p))
    assert cross_entropy(p, p) == pytest.approx(entropy(p))
    assert cross_entropy([0.5, 0.5], [1.0, 0.0]) == math.inf
    assert cross_entropy([1.0, 0.0], [0.5, 0.5]) == pytest.approx(math.log(2))   # q>0 where p>0
    assert kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf


def test_kl_nonnegative_and_zero_iff_equal():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p, q = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(7))
        assert kl_divergence(p, q) > 0
        assert kl_divergence(p, p) == 0.0
        assert cross_entropy(p, q) >= entropy(p)


def test_perplexity_cross_entropy_round_trip():
    for ce in (0.0, 0.1, 1.0, 2.5, 10.0):
        assert cross_entropy_from_perplexity(perplexity(ce)) == pytest.approx(ce, abs=1e-12)
    for ppl in (1.0, 2.0, 6.0, 1234.5):
        assert perplexity(cross_entropy_from_perplexity(ppl)) == pytest.approx(ppl, rel=1e-12)
    assert perplexity(1e6) == math.inf
    with pytest.raises(ValueError):
        cross_entropy_from_perplexity(0.5)


# ------------------------------------------------------------------------------ corpus sums
def test_corpus_stats_is_whole_split_mean_not_mean_of_batches():
    s = CorpusStats()
    s.add(nll_sum=10.0, n_tokens=10, n_correct=5)        # batch mean 1.0
    s.add(nll_sum=3.0, n_tokens=1, n_correct=1)          # batch mean 3.0
    s.add_decoded([["a"], ["b", "c"]], [["a"], ["b", "d"]])
    assert s.cross_entropy == pytest.approx(13 / 11)     # not (1.0 + 3.0) / 2
    assert s.perplexity == pytest.approx(math.exp(13 / 11))
    assert s.token_accuracy == pytest.approx(6 / 11)
    assert s.exact_match == 0.5
    both = CorpusStats().add(10.0, 10) + CorpusStats().add(3.0, 1)
    assert both.cross_entropy == pytest.approx(13 / 11)
    d = s.as_dict()
    assert d["n_tokens"] == 11 and d["perplexity"] == pytest.approx(s.perplexity)
    assert math.isnan(CorpusStats().perplexity)


def test_token_accuracy_and_exact_match():
    hyps = [["a", "b", "c"], ["x"], ["p", "q"]]
    refs = [["a", "b", "d"], ["x", "y"], ["p", "q"]]
    # positions right: 2 + 1 + 2 = 5 of 3 + 2 + 2 = 7 reference tokens
    assert token_accuracy(hyps, refs) == pytest.approx(5 / 7)
    assert exact_match(hyps, refs) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        exact_match([["a"]], [])


# ------------------------------------------------------------------------------ BLEU by hand
def test_bleu_perfect_match_is_100():
    s = "the cat sat on the mat".split()
    assert corpus_bleu([s, s[:4]], [s, s[:4]]) == pytest.approx(100.0)


def test_bleu_no_overlap_is_0():
    assert corpus_bleu([["a", "b", "c", "d"]], [["w", "x", "y", "z"]]) == 0.0
    assert corpus_bleu([[]], [["a", "b"]]) == 0.0           # empty hypothesis: c = 0


def test_bleu_brevity_penalty_by_hand():
    # hyp "a b c d" (c = 4), ref "a b c d e f" (r = 6): every n-gram of the hypothesis matches,
    # p1 = 4/4, p2 = 3/3, p3 = 2/2, p4 = 1/1; BP = exp(1 - 6/4) = exp(-0.5)
    # BLEU = 100 * exp(-0.5) = 60.653065971263345
    d = bleu_details([list("abcd")], [list("abcdef")])
    assert d["precisions"] == [1.0, 1.0, 1.0, 1.0]
    assert d["bp"] == pytest.approx(math.exp(-0.5))
    assert (d["hyp_len"], d["ref_len"], d["ratio"]) == (4, 6, pytest.approx(4 / 6))
    assert d["bleu"] == pytest.approx(60.653065971263345, abs=1e-12)


def test_bleu_clipping_by_hand():
    # hyp "a a b c d", ref "a b c d e" (c = r = 5, BP = 1)
    # unigrams: a x2 is clipped to the reference's single a: 1 + b + c + d = 4 of 5
    # bigrams:  aa ab bc cd  vs ab bc cd de    -> 3 of 4
    # trigrams: aab abc bcd  vs abc bcd cde    -> 2 of 3
    # 4-grams:  aabc abcd    vs abcd bcde      -> 1 of 2
    # BLEU = 100 * (4/5 * 3/4 * 2/3 * 1/2) ** (1/4) = 100 * (1/5) ** 0.25 = 66.87403049764220
    d = bleu_details([list("aabcd")], [list("abcde")])
    assert d["matches"] == [4, 3, 2, 1] and d["totals"] == [5, 4, 3, 2]
    assert d["bp"] == 1.0
    assert d["bleu"] == pytest.approx(100 * 0.2 ** 0.25, abs=1e-12)
    assert d["bleu"] == pytest.approx(66.87403049764220, abs=1e-10)


def test_bleu_sums_counts_over_the_corpus_by_hand():
    # sentence 1: hyp = ref = "a b c d": matches 4/4, 3/3, 2/2, 1/1
    # sentence 2: hyp "x y z w v" vs ref "x y z u": unigrams 3/5, bigrams xy yz -> 2/4,
    #             trigram xyz -> 1/3, 4-grams 0/2 (alone it would score 0)
    # corpus: p = 7/9, 5/7, 3/5, 1/3; c = 9 >= r = 8 so BP = 1
    # BLEU = 100 * (7/9 * 5/7 * 3/5 * 1/3) ** (1/4) = 100 * (1/9) ** (1/4) = 100 / sqrt(3)
    hyps = [list("abcd"), list("xyzwv")]
    refs = [list("abcd"), list("xyzu")]
    assert corpus_bleu(hyps, refs) == pytest.approx(100 / math.sqrt(3), abs=1e-12)
    assert corpus_bleu(hyps[1:], refs[1:]) == 0.0


def test_bleu_multiple_references_by_hand():
    # refs of lengths 6 and 3 for a hypothesis of length 4: the closest is 3, so BP = 1, and
    # every hypothesis n-gram is in the first reference: BLEU = 100
    assert corpus_bleu([list("abcd")], multi_refs=[[list("abcdef"), list("abc")]]) == \
        pytest.approx(100.0)
    # a tie (lengths 3 and 5 around 4) takes the shorter one: r = 3, BP = 1
    assert bleu_details([list("abcd")], multi_refs=[[list("abc"), list("abcde")]])["ref_len"] == 3
    # clipping uses the largest count in any single reference: hyp "a a b b", refs "a a c" and
    # "b b c": unigrams min(2, 2) + min(2, 2) = 4 of 4
    d = bleu_details([list("aabb")], multi_refs=[[list("aac"), list("bbc")]])
    assert d["matches"][0] == 4
    with pytest.raises(ValueError):
        corpus_bleu([list("ab")], [list("ab")], multi_refs=[[list("ab")]])


# ------------------------------------------------------------------------------ BLEU vs sacrebleu
def _random_corpus(seed, n=30, vocab=6, noise=0.25):
    """References of 4-15 tokens and hypotheses made from them by random edits."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(vocab)]
    hyps, refs = [], []
    for _ in range(n):
        ref = [words[i] for i in rng.integers(vocab, size=int(rng.integers(4, 16)))]
        hyp = []
        for t in ref:
            u = rng.random()
            if u < noise / 3:
                continue                                  # deletion
            hyp.append(words[int(rng.integers(vocab))] if u < 2 * noise / 3 else t)
            if u > 1 - noise / 3:
                hyp.append(words[int(rng.integers(vocab))])   # insertion
        while len(hyp) < 4:                               # every hypothesis has 4-grams
            hyp.append(words[int(rng.integers(vocab))])
        hyps.append(hyp)
        refs.append(ref)
    return hyps, refs


def _sacrebleu(hyps, ref_streams):
    sacrebleu = pytest.importorskip("sacrebleu")
    return sacrebleu.corpus_bleu([" ".join(h) for h in hyps],
                                 [[" ".join(r) for r in refs] for refs in ref_streams],
                                 tokenize="none", smooth_method="none").score


@pytest.mark.parametrize("seed", range(12))
def test_bleu_equals_sacrebleu_on_random_corpora(seed):
    pytest.importorskip("sacrebleu")
    hyps, refs = _random_corpus(seed, noise=0.1 + 0.05 * (seed % 6))
    mine = bleu_details(hyps, refs)
    assert min(mine["precisions"]) > 0                    # the non-degenerate case
    assert mine["bleu"] == pytest.approx(_sacrebleu(hyps, [refs]), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_bleu_equals_sacrebleu_with_short_hypotheses_and_two_references(seed):
    pytest.importorskip("sacrebleu")
    hyps, refs = _random_corpus(100 + seed, noise=0.3)
    _, refs2 = _random_corpus(200 + seed, noise=0.3)
    hyps = [h[:max(4, len(h) // 2)] for h in hyps]        # brevity penalty < 1
    multi = [[a, b] for a, b in zip(refs, refs2)]
    assert bleu_details(hyps, refs)["bp"] < 1
    assert corpus_bleu(hyps, refs) == pytest.approx(_sacrebleu(hyps, [refs]), abs=1e-9)
    assert corpus_bleu(hyps, multi_refs=multi) == pytest.approx(_sacrebleu(hyps, [refs, refs2]),
                                                                abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_bleu_zero_cases_agree_with_sacrebleu(seed):
    pytest.importorskip("sacrebleu")
    # hypotheses from a disjoint word set except one shared word: unigram matches, no 4-grams
    hyps, refs = _random_corpus(300 + seed, vocab=5)
    hyps = [[("v" + t[1:]) if i % 2 else "w0" for i, t in enumerate(h)] for h in hyps]
    d = bleu_details(hyps, refs)
    assert d["precisions"][0] > 0 and d["precisions"][3] == 0
    assert d["bleu"] == 0.0
    assert _sacrebleu(hyps, [refs]) == pytest.approx(0.0, abs=1e-9)


def test_bleu_labels_name_the_sacrebleu_settings_that_give_the_same_number():
    sacrebleu = pytest.importorskip("sacrebleu")
    from minis2s.metrics import bleu_label, corpus_bleu
    hyps = ["the cat sat on a mat", "a dog barked at the cat today"]
    refs = ["the cat sat on the mat", "a dog barked at a cat today"]
    words = corpus_bleu([h.split() for h in hyps], [r.split() for r in refs])
    assert "sacrebleu --tokenize none --smooth-method none" in bleu_label("space")
    assert words == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none",
                                                        smooth_method="none").score, abs=1e-9)
    hyps, refs = [h.replace(" ", "") for h in hyps], [r.replace(" ", "") for r in refs]
    chars = corpus_bleu([list(h) for h in hyps], [list(r) for r in refs])
    assert "sacrebleu --tokenize char --smooth-method none on targets without spaces" in bleu_label("char")
    assert chars == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="char",
                                                        smooth_method="none").score, abs=1e-9)
    assert "no sacrebleu equivalent" in bleu_label("bpe")
