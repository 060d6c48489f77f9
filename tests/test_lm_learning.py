"""Language-model claims, measured: the LSTM LM beats every n-gram on a language with long-range
dependencies (nested brackets), in a CI-sized run (about 10 s on one core); the perplexities the
trainers report equal the per-token NLL summed here over the test split."""
import json
import math

import numpy as np
import pytest

from grad.tensor import no_grad
from minis2s.lm.training import LMConfig, compare, fit_lm, load_corpus, load_lm


def lstm_perplexity(model, vocab, sentences):
    """exp(summed NLL / predicted tokens) over a split, the NLL summed here sentence by sentence
    from the model's teacher-forced ``loss(..., reduction="sum")`` (EOS counted, BOS not)."""
    nll, count = 0.0, 0
    model.eval()
    with no_grad():
        for s in sentences:
            ids = np.array([vocab.encode(s, add_bos=True, add_eos=True)])
            nll += model.loss(ids[:, :-1], ids[:, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    return math.exp(nll / count)


def test_lm_run_directory_scores_and_generates(tmp_path):
    figures = fit_lm(LMConfig(builtin="brackets", model="lstm", epochs=1, hidden_size=32,
                              emb_size=16, out=str(tmp_path / "lm"), quiet=True), log=lambda m: None)
    lm = load_lm(tmp_path / "lm")
    (lp, n), = lm.score(["( a )"])
    assert n == 4 and lp < 0
    _, _, test, _, _ = load_corpus(LMConfig(builtin="brackets"))
    assert len(test) > 100
    assert figures["test_ppl"] == pytest.approx(lstm_perplexity(lm.model, lm.vocab, test), rel=1e-5)
    samples = lm.generate(3, max_len=10, seed=1)
    assert len(samples) == 3 and all(isinstance(s, str) for s in samples)
    ngram = fit_lm(LMConfig(builtin="brackets", model="ngram", order=3, out=str(tmp_path / "ng")),
                   log=lambda m: None)
    scores = load_lm(tmp_path / "ng").score([" ".join(s) for s in test])
    expected = math.exp(-sum(lp for lp, _ in scores) / sum(n for _, n in scores))
    assert sum(n for _, n in scores) == sum(len(s) + 1 for s in test)
    assert ngram["test_ppl"] == pytest.approx(expected, rel=1e-12)
    assert load_lm(tmp_path / "ng").score(["( a )"])[0][1] == 4


def test_lstm_learns_how_often_a_sentence_is_empty():
    """Empty sentences are trained on ([BOS] -> [EOS]), so the LSTM learns P(empty)."""
    from minis2s.lm.training import train_lstm
    train = ([["a", "b"]] * 7 + [[]] * 3) * 30                           # 30% empty
    cfg = LMConfig(epochs=8, hidden_size=16, emb_size=8, dropout=0.0, min_freq=1, lr=1e-2)
    model, vocab, figures = train_lstm(cfg, train, train[:50], train[:50], log=lambda m: None)
    (lp, n), = model.score([[]])
    assert n == 1 and math.exp(lp) == pytest.approx(0.3, abs=0.05)
    assert figures["test_ppl"] == pytest.approx(lstm_perplexity(model, vocab, train[:50]), rel=1e-5)


def test_lm_trainer_with_bpe_tokens(tmp_path, capsys):
    """`lm train --tokenizer bpe --bpe-merges N`, for both models: the run directory records the
    learned merges, its tokenizer round-trips any text, and the models score and generate."""
    from minis2s.cli import main
    words = ["the cat", "the dog", "a cat", "sat on", "the mat", "ate the food", "saw a bird"]
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=int(rng.integers(1, 4)))) for _ in range(200)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for model in ("ngram", "lstm"):
        out = tmp_path / model
        rc = main(["lm", "train", "--corpus", str(corpus), "--model", model, "--tokenizer", "bpe",
                   "--bpe-merges", "12", "--min-freq", "1", "--epochs", "1", "--hidden-size", "16",
                   "--emb-size", "8", "--out", str(out), "--quiet"])
        assert rc == 0, capsys.readouterr()
        assert "test perplexity" in capsys.readouterr().out
        tok = json.loads((out / "config.json").read_text(encoding="utf-8"))["tokenizer"]
        assert tok["name"] == "bpe" and 0 < len(tok["merges"]) <= 12
        lm = load_lm(out)
        for text in ["the cat sat on the mat", "  naïve 🦊\tunseen  ", "", "zzz"]:
            assert lm.tokenizer.detokenize(lm.tokenizer.tokenize(text)) == text
        toks = lm.tokenizer.tokenize("the cat sat on the mat")
        assert len(toks) < len("the cat sat on the mat")                 # merges were applied
        assert any(" " in t and len(t) > 1 for t in toks)                # e.g. " cat": subwords
        (lp, n), (lp_bad, _) = lm.score(["the cat sat on the mat", "mat the on sat cat the"])
        assert n == len(toks) + 1 and lp < 0
        if model == "ngram":
            assert lp > lp_bad                                           # the fluent order wins
    samples = lm.generate(4, max_len=12, seed=1)
    assert len(samples) == 4 and all(isinstance(s, str) for s in samples)
    assert any(s.strip() for s in samples)


# The slowest test last, so that a run stopped at the first failure (tools/mutants.py) ends early.
def test_lstm_beats_the_best_ngram_on_brackets():
    rows, _ = compare("brackets", dict(epochs=3, hidden_size=128, quiet=True), orders=range(1, 6),
                      transformer_cfg=False)
    ngrams = {name: ppl for name, ppl, _ in rows if "gram" in name}
    lstm = [ppl for name, ppl, _ in rows if name.startswith("LSTM")][0]
    best = min(ngrams.values())
    assert lstm < best, (lstm, ngrams)
