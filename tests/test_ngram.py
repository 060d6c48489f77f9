"""Tests for minis2s.lm.ngram: normalisation, hand-computed values, the nltk oracle, a Markov
source whose entropy rate is known, and saving."""
import itertools
import json
import math

import numpy as np
import pytest

from minis2s.lm.corpora import load_builtin, markov_source
from minis2s.lm.ngram import BOS, EOS, UNK, NGramLM

TRAIN = [s.split() for s in [
    "the cat sat on the mat", "the dog sat on the log", "a cat saw a dog",
    "the cat ate", "a dog ate the cat food", "on the mat the cat sat", "the log",
]]


def _contexts(lm, order):
    """Every training context, plus unseen ones (OOV words, partly seen, <s>-padded, empty)."""
    seen = set()
    for s in TRAIN:
        padded = [BOS] * (order - 1) + s + [EOS]
        for i in range(order - 1, len(padded)):
            seen.add(tuple(padded[i - order + 1:i]))
    unseen = [("zebra", "quux", "cat"), ("cat", "cat", "cat"), ("mat", "the", "dog"),
              ("on",), (), (BOS, "log"), ("<unk>", "sat")]
    return sorted(seen) + unseen


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("smoothing,kw", [("add-k", {"k": 1.0}), ("add-k", {"k": 0.01}),
                                          ("kneser-ney", {}),
                                          ("kneser-ney", {"discount": "auto", "min_freq": 2}),
                                          ("kneser-ney", {"discount": 1.0})])
def test_every_context_sums_to_one(order, smoothing, kw):
    lm = NGramLM(order, smoothing, **kw).fit(TRAIN)
    assert BOS not in lm.vocab and EOS in lm.vocab and UNK in lm.vocab
    for ctx in _contexts(lm, order):
        dist = lm.distribution(ctx)
        assert set(dist) == set(lm.vocab)
        assert math.fsum(dist.values()) == pytest.approx(1.0, abs=1e-9), ctx
        assert min(dist.values()) > 0
        assert all(dist[w] == lm.prob(w, ctx) for w in lm.vocab)


def test_add_one_by_hand():
    # V = {</s>, <unk>, a, b}: |V| = 4.  Bigrams: (<s> a), (a b), (b </s>), each count 1.
    # P(a|<s>) = (1 + 1) / (1 + 4) = 0.4, likewise P(b|a) and P(</s>|b): 3 predicted tokens
    lm = NGramLM(2, "add-k", k=1.0).fit([["a", "b"]])
    assert lm.vocab == [EOS, UNK, "a", "b"]
    assert lm.prob("a", [BOS]) == pytest.approx(0.4)
    assert lm.prob("a", []) == pytest.approx(0.4)           # short contexts are <s>-padded
    assert lm.prob("b", ["a"]) == pytest.approx(0.4)
    assert lm.prob("a", ["a"]) == pytest.approx(1 / 5)
    assert lm.prob("a", ["never-seen"]) == pytest.approx(1 / 4)  # unseen context: uniform
    assert lm.logprob(["a", "b"]) == pytest.approx(3 * math.log(0.4))
    assert lm.cross_entropy([["a", "b"]]) == pytest.approx(-math.log(0.4))   # EOS counted
    assert lm.perplexity([["a", "b"]]) == pytest.approx(2.5)


def test_kneser_ney_by_hand():
    # train "a b", "a c"; V = {</s>, <unk>, a, b, c}, |V| = 5, D = 0.75.
    # Unigram continuation counts (distinct left neighbours): a {<s>} 1, b {a} 1, c {a} 1,
    # </s> {b, c} 2; total 5, 4 distinct types.
    #   P1(w) = (max(N(.w) - D, 0) + D * 4 * 1/5) / 5
    #   P1(</s>) = (1.25 + 0.6) / 5 = 0.37;  P1(a) = P1(b) = P1(c) = 0.85 / 5 = 0.17;
    #   P1(<unk>) = 0.6 / 5 = 0.12                              (sum 1.0)
    # Bigram (highest order, raw counts): c(a b) = c(a c) = 1, c(a) = 2, 2 types after a;
    #   P2(b|a) = (1 - 0.75 + 0.75 * 2 * 0.17) / 2 = 0.2525
    #   c(<s> a) = 2, 1 type:  P2(a|<s>) = (2 - 0.75 + 0.75 * 1 * 0.17) / 2 = 0.68875
    #   P2(b|<s>) = 0.75 * 0.17 / 2 = 0.06375;  unseen context "c c": P1(b) = 0.17
    lm = NGramLM(2, "kneser-ney", discount=0.75).fit([["a", "b"], ["a", "c"]])
    assert lm.prob(EOS, ["zzz"]) == pytest.approx(0.37)          # unseen context -> P1
    assert lm.prob("a", ["zzz"]) == pytest.approx(0.17)
    assert lm.prob(UNK, ["zzz"]) == pytest.approx(0.12)
    assert lm.prob("b", ["a"]) == pytest.approx(0.2525)
    assert lm.prob("a", [BOS]) == pytest.approx(0.68875)
    assert lm.prob("b", [BOS]) == pytest.approx(0.06375)
    # An order-1 model's highest order is the unigram, so it uses raw counts (a 2, b 1, c 1,
    # </s> 2; total 6, 4 types): P(</s>) = (2 - 0.75 + 0.75 * 4 / 5) / 6 = 1.85 / 6
    unigram = NGramLM(1, "kneser-ney").fit([["a", "b"], ["a", "c"]])
    assert unigram.prob(EOS) == pytest.approx(1.85 / 6)


def test_trigram_kneser_ney_by_hand_with_the_bos_rule_and_the_automatic_discount():
    # train "a b", "a b", "b a"; V = {</s>, <unk>, a, b}, |V| = 4, P0 = 1/4.
    # Trigrams (raw counts, the highest order):
    #   <s> <s> a: 2   <s> a b: 2   a b </s>: 2   <s> <s> b: 1   <s> b a: 1   b a </s>: 1
    # Bigram counts. Those that start with <s> keep their raw counts (nothing can precede <s>):
    #   <s> a: 2   <s> b: 1;
    # the others are continuation counts N1+(. v w), distinct words before them in a trigram:
    #   a b: 1 {<s>}   b </s>: 1 {a}   b a: 1 {<s>}   a </s>: 1 {b}
    # (had "<s> a" been given its continuation count too, it would be 1 {<s>}, not 2).
    # Unigram continuation counts, distinct words before w in a bigram:
    #   a: 2 {<s>, b}   b: 2 {<s>, a}   </s>: 2 {b, a};  total 6, 3 types.
    # discount="auto", D_n = n1 / (n1 + 2 n2) over the counts of order n:
    #   D3: counts 2,2,2,1,1,1 -> 3 / (3 + 6) = 1/3;   D2: counts 2,1,1,1,1,1 -> 5 / (5 + 2) = 5/7;
    #   D1: counts 2,2,2, no singletons -> the fallback 0.75.
    # P1(a) = P1(b) = P1(</s>) = (2 - 3/4 + 3/4 * 3 * 1/4) / 6 = 29/96;  P1(<unk>) = 9/16 / 6 = 3/32
    # P2(b | a)   = (1 - 5/7 + 5/7 * 2 * 29/96) / 2 = 241/672      (after "a": b 1, </s> 1)
    # P2(a | <s>) = (2 - 5/7 + 5/7 * 2 * 29/96) / 3 = 577/1008     (after "<s>": a 2, b 1)
    # P3(b | <s> a)   = (2 - 1/3 + 1/3 * 1 * 241/672) / 2 = 3601/4032
    # P3(a | <s> <s>) = (2 - 1/3 + 1/3 * 2 * 577/1008) / 3 = 3097/4536
    # P3(a | b b): context never seen, so P2(a | b) = (1 - 5/7 + 5/7 * 2 * 29/96) / 2 = 241/672
    train = [["a", "b"], ["a", "b"], ["b", "a"]]
    lm = NGramLM(3, "kneser-ney", discount="auto").fit(train)
    assert lm.discounts == pytest.approx({1: 0.75, 2: 5 / 7, 3: 1 / 3}, rel=1e-15)
    assert lm.prob("a", []) == pytest.approx(3097 / 4536, rel=1e-12)
    assert lm.prob("b", ["a"]) == pytest.approx(3601 / 4032, rel=1e-12)    # <s>-padded: <s> a
    assert lm.prob("a", ["b", "b"]) == pytest.approx(241 / 672, rel=1e-12)
    assert lm.prob(UNK, ["b", "b"]) == pytest.approx((5 / 7 * 2 * 3 / 32) / 2, rel=1e-12)
    # With a fixed D = 0.75 at every order the <s> rule shows alone:
    # P1 as above; P2(a | <s>) = (2 - 3/4 + 3/4 * 2 * 29/96) / 3 = 109/192;
    # P3(a | <s> <s>) = (2 - 3/4 + 3/4 * 2 * 109/192) / 3 = 269/384
    # (with "<s> a" counted 1 instead: P2(a | <s>) = 45/128 and P3(a | <s> <s>) = 0.5924...)
    fixed = NGramLM(3, "kneser-ney", discount=0.75).fit(train)
    assert fixed.prob("a", []) == pytest.approx(269 / 384, rel=1e-12)
    assert math.fsum(fixed.distribution([]).values()) == pytest.approx(1.0, abs=1e-12)


def test_unseen_word_gets_the_unk_probability():
    for smoothing in ("add-k", "kneser-ney"):
        lm = NGramLM(3, smoothing).fit(TRAIN)
        p = lm.prob("zebra", ["the", "cat"])
        assert p > 0 and p == lm.prob(UNK, ["the", "cat"])
        assert math.isfinite(lm.logprob(["the", "zebra", "sat", "on", "a", "unicorn"]))


def test_min_freq_gives_unk_real_counts():
    lm1 = NGramLM(2, "add-k", min_freq=1).fit(TRAIN)
    lm2 = NGramLM(2, "add-k", min_freq=2).fit(TRAIN)
    assert "food" in lm1.vocab and "food" not in lm2.vocab and "cat" in lm2.vocab
    assert lm2.prob(UNK, ["the"]) > lm1.prob(UNK, ["the"])       # "the food", "the log", ...
    assert lm2.prob("food", ["cat"]) == lm2.prob(UNK, ["cat"])


def test_logprob_perplexity_and_cross_entropy_agree():
    lm = NGramLM(3).fit(TRAIN)
    sents = [["the", "cat", "sat"], ["a", "dog"], []]
    total = sum(lm.logprob(s) for s in sents)
    n = sum(len(s) + 1 for s in sents)                           # EOS counted, BOS not
    assert lm.cross_entropy(sents) == pytest.approx(-total / n)
    assert lm.perplexity(sents) == pytest.approx(math.exp(-total / n))
    s = ["the", "cat", "sat"]
    padded = [BOS, BOS] + s + [EOS]
    assert lm.logprob(s) == pytest.approx(sum(math.log(lm.prob(padded[i], padded[i - 2:i]))
                                              for i in range(2, len(padded))))
    assert lm.logprob([]) == pytest.approx(math.log(lm.prob(EOS, [])))


def test_kneser_ney_beats_add_one_on_held_out_text():
    corpus = load_builtin("pydoc")
    for order in (2, 3):
        kn = NGramLM(order, "kneser-ney", min_freq=2).fit(corpus.train).perplexity(corpus.test)
        add1 = NGramLM(order, "add-k", k=1.0, min_freq=2).fit(corpus.train).perplexity(corpus.test)
        assert kn < 0.5 * add1, (order, kn, add1)


def test_add_k_equals_nltk_lidstone_per_event():
    nltk_lm = pytest.importorskip("nltk.lm")
    from nltk.lm.preprocessing import pad_both_ends
    from nltk.util import everygrams
    corpus = load_builtin("pydoc")
    train, held_out = corpus.train[:400], corpus.valid[:60]
    for order, k in [(2, 1.0), (3, 0.5), (3, 0.01)]:
        mine = NGramLM(order, "add-k", k=k, min_freq=1).fit(train)
        # Vocabulary conventions.  nltk's len(vocab) counts every item it holds plus <UNK>.
        # Ours is the training words + </s> + <unk>, without <s> (never predicted).  Giving
        # nltk the training words + "</s>" makes both |V| equal (checked below).  nltk then maps
        # "<s>" to <UNK>; training has no out-of-vocabulary words (min_freq=1), so nltk's <UNK>
        # contexts are exactly our <s> contexts -- which is why we compare only events whose
        # context holds no unseen word (an unseen *predicted* word is fine: count 0 on both
        # sides).  nltk pads order-1 </s> on the right; the extra n-grams end in </s> </s> and
        # have </s> in their context, which we never query.  Order 1 is left out: nltk pads
        # nothing there, so it has no </s> counts at all.
        vocab = nltk_lm.Vocabulary([t for s in train for t in s] + [EOS], unk_cutoff=1)
        assert len(vocab) == len(mine.vocab)
        ref = nltk_lm.Lidstone(k, order, vocabulary=vocab)
        ref.fit([list(everygrams(list(pad_both_ends(s, n=order)), max_len=order)) for s in train])
        known = set(mine.vocab)
        n_events = 0
        for s in train[:100] + held_out:
            padded = [BOS] * (order - 1) + s + [EOS]
            for i in range(order - 1, len(padded)):
                ctx = padded[i - order + 1:i]
                if any(t not in known and t != BOS for t in ctx):
                    continue
                assert mine.prob(padded[i], ctx) == pytest.approx(ref.score(padded[i], ctx),
                                                                  rel=1e-12, abs=1e-15)
                n_events += 1
        assert n_events > 1000


@pytest.mark.parametrize("smoothing,kw", [("add-k", {"k": 0.01}), ("kneser-ney", {})])
def test_matching_order_ngram_reaches_the_markov_entropy_rate(smoothing, kw):
    src = markov_source(order=2, alphabet_size=5, seed=0)
    h = src.entropy_rate()
    train, test = [], []
    rng = np.random.default_rng(1)
    while sum(len(s) + 1 for s in train) < 200_000:
        train.extend(src.sample(2000, rng=rng))
    test = src.sample(8000, rng=np.random.default_rng(2))          # about 100k tokens
    lm = NGramLM(src.order + 1, smoothing, **kw).fit(train)
    ce = lm.cross_entropy(test)
    assert abs(ce - h) / h < 0.02, (ce, h)
    assert lm.perplexity(test) == pytest.approx(math.exp(ce), rel=1e-12)
    # the true source's own cross-entropy on the same sample is the floor the model approaches
    n = sum(len(s) + 1 for s in test)
    true_ce = -sum(src.logprob(s) for s in test) / n
    assert true_ce <= ce


@pytest.mark.parametrize("smoothing", ["add-k", "kneser-ney"])
def test_save_and_load_round_trip(tmp_path, smoothing):
    data = TRAIN + [["tokens with", " spaces", "and\ttabs"], ["ünïcode", "🦊"]]
    lm = NGramLM(3, smoothing, k=0.3, discount="auto").fit(data)
    path = tmp_path / "lm.json"
    lm.save(path)
    d = json.loads(path.read_text(encoding="utf-8"))                # plain JSON, not pickle
    assert d["order"] == 3 and d["smoothing"] == smoothing
    back = NGramLM.load(path)
    assert back.vocab == lm.vocab and back.to_dict() == lm.to_dict()
    for ctx in itertools.islice(_contexts(lm, 3), 40):
        for w in lm.vocab + ["unseen"]:
            assert back.prob(w, ctx) == lm.prob(w, ctx)
    assert back.prob(" spaces", ["tokens with"]) == lm.prob(" spaces", ["tokens with"])
    with pytest.raises(ValueError):
        NGramLM.from_dict({"format": "something else"})


def test_bad_arguments():
    for kwargs in [dict(order=0), dict(smoothing="witten-bell"), dict(k=0), dict(discount=1.5),
                   dict(min_freq=0)]:
        with pytest.raises(ValueError):
            NGramLM(**{"order": 2, **kwargs})


def test_untrained_model_is_uniform():
    lm = NGramLM(2)
    assert lm.vocab == [EOS, UNK]
    assert lm.prob("anything") == pytest.approx(0.5)


# ----------------------------------------------------------------------------- the lm-train path
@pytest.fixture(scope="module")
def markov_through_load_corpus():
    from minis2s.lm.training import LMConfig, load_corpus
    return load_corpus(LMConfig(builtin="markov")), load_builtin("markov")


def test_load_corpus_keeps_the_empty_sentences_of_the_markov_source(markov_through_load_corpus):
    (train, valid, test, _, info), corpus = markov_through_load_corpus
    # An empty sentence is the event </s> right after <s>; the source emits it with the start
    # state's end probability (about 7% of sentences), so every split has some.
    assert [train, valid, test] == [corpus.train, corpus.valid, corpus.test]
    assert all(sum(1 for s in split if not s) > 30 for split in (train, valid, test))
    assert info["entropy_rate_nats"] == corpus.info["entropy_rate_nats"]


@pytest.mark.parametrize("smoothing", ["add-k", "kneser-ney"])
def test_matching_order_ngram_through_the_lm_train_path_reaches_the_entropy_rate(
        markov_through_load_corpus, smoothing):
    """What `lm train` / `lm compare --builtin markov` measure: the same split and settings."""
    from minis2s.lm.training import LMConfig, train_ngram
    (train, valid, test, _, info), _ = markov_through_load_corpus
    h = info["entropy_rate_nats"]
    cfg = LMConfig(builtin="markov", model="ngram", order=info["matching_ngram_order"],
                   smoothing=smoothing)
    lm, figures = train_ngram(cfg, train, valid, test)
    ce = math.log(figures["test_ppl"])
    assert abs(ce - h) / h < 0.02, (ce, h)
    assert figures["test_ppl"] == pytest.approx(math.exp(lm.cross_entropy(test)), rel=1e-12)
    # A model trained on other samples of the source cannot beat the source itself on this test
    # split. Dropping the empty sentences broke this (3-gram KN 1.2327 nats vs the source's
    # 1.2380 on the same non-empty sentences): the model learns P(</s> | <s> <s>) ~ 0 and spends
    # that mass on letters, which the biased test split rewards.
    src = markov_source(order=2, alphabet_size=5, seed=0)
    true_ce = -sum(src.logprob(s) for s in test) / sum(len(s) + 1 for s in test)
    assert ce >= true_ce, (ce, true_ce)


def test_empty_sentence_is_one_predicted_end_of_sentence():
    lm = NGramLM(3, "kneser-ney").fit(TRAIN + [[], []])
    assert lm.logprob([]) == pytest.approx(math.log(lm.prob(EOS, [])))
    assert lm.total_logprob([[]])[1] == 1
    assert lm.prob(EOS, []) > NGramLM(3, "kneser-ney").fit(TRAIN).prob(EOS, [])


# ----------------------------------------------------------------------------- damaged files
def test_save_is_atomic(tmp_path, monkeypatch):
    """The file is written to a temporary file and renamed: a failure before the rename leaves
    the old model whole and no temporary file behind."""
    import minis2s.checkpoint as ckpt
    path = tmp_path / "ngram.json"
    NGramLM(2).fit(TRAIN).save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "simulated crash before the rename")
    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        NGramLM(3).fit(TRAIN[:2]).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ngram.json"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-utf8", "wrong-type", "bad-row",
                                    "missing-key", "missing"])
def test_loading_a_damaged_file_names_it(tmp_path, damage):
    from minis2s.checkpoint import CheckpointError
    path = tmp_path / "ngram.json"
    NGramLM(2).fit(TRAIN).save(path)
    text = path.read_text(encoding="utf-8")
    d = json.loads(text)
    if damage == "truncated":
        path.write_text(text[: len(text) // 2], encoding="utf-8")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not-utf8":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "wrong-type":
        path.write_text(json.dumps({**d, "ngrams": 5}), encoding="utf-8")
    elif damage == "bad-row":
        path.write_text(json.dumps({**d, "ngrams": [["the", 3]]}), encoding="utf-8")
    elif damage == "missing-key":
        path.write_text(json.dumps({k: v for k, v in d.items() if k != "vocab"}), encoding="utf-8")
    else:
        path.unlink()
    with pytest.raises(CheckpointError) as err:
        NGramLM.load(path)
    assert str(path) in str(err.value)


def test_generate_samples_from_the_markov_chain_greedy_and_top_k():
    from collections import Counter as _Counter
    from minis2s.lm.ngram import NGramLM as _LM
    corpus = [s.split() for s in ["the cat sat", "the dog sat", "a cat ran"] * 10 + ["the cat ran"] * 5]
    lm = _LM(order=2).fit(corpus)
    assert lm.generate(1, greedy=True) == [["the", "cat", "ran"]]      # cat: 15 x ran, 10 x sat
    assert lm.generate(2, greedy=True) == [["the", "cat", "ran"]] * 2
    assert lm.generate(3, seed=4) == lm.generate(3, seed=4)
    # top-k: every token is among the k most probable after the previous one
    for sentence in lm.generate(50, top_k=2, seed=1):
        context = []
        for word in sentence:
            dist = lm.distribution(context)
            assert word in sorted(dist, key=lambda w: -dist[w])[:2]
            context.append(word)
    # sampling: the first words follow P(w | <s>)
    firsts = _Counter(s[0] if s else "</s>" for s in lm.generate(2000, seed=0))
    p = lm.distribution([])
    for w in ("the", "a"):
        assert abs(firsts[w] / 2000 - p[w]) < 0.04, (w, firsts[w] / 2000, p[w])
    # a low temperature is nearly greedy; the prompt is kept
    assert lm.generate(5, temperature=0.01, seed=3) == [["the", "cat", "ran"]] * 5
    assert all(s[:2] == ["a", "dog"] for s in lm.generate(5, prompt=["a", "dog"], seed=2))
