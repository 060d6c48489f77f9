"""Language-model claims, measured: the LSTM LM beats every n-gram on a language with long-range
dependencies (nested brackets), in a CI-sized run (about 10 s on one core)."""
import math

from minis2s.lm.training import LMConfig, compare, fit_lm, load_lm


def test_lstm_beats_the_best_ngram_on_brackets():
    rows, _ = compare("brackets", dict(epochs=3, hidden_size=128, quiet=True), orders=range(1, 6))
    ngrams = {name: ppl for name, ppl, _ in rows if "gram" in name}
    lstm = [ppl for name, ppl, _ in rows if name.startswith("LSTM")][0]
    best = min(ngrams.values())
    assert lstm < best, (lstm, ngrams)


def test_lm_run_directory_scores_and_generates(tmp_path):
    figures = fit_lm(LMConfig(builtin="brackets", model="lstm", epochs=1, hidden_size=32,
                              emb_size=16, out=str(tmp_path / "lm"), quiet=True), log=lambda m: None)
    lm = load_lm(tmp_path / "lm")
    (lp, n), = lm.score(["( a )"])
    assert n == 4 and lp < 0
    assert math.isfinite(figures["test_ppl"])
    samples = lm.generate(3, max_len=10, seed=1)
    assert len(samples) == 3 and all(isinstance(s, str) for s in samples)
    ngram = fit_lm(LMConfig(builtin="brackets", model="ngram", order=3, out=str(tmp_path / "ng")),
                   log=lambda m: None)
    assert math.isfinite(ngram["test_ppl"]) and ngram["test_ppl"] > 1.0
    assert load_lm(tmp_path / "ng").score(["( a )"])[0][1] == 4
