"""Learning tests: the real model learns the real built-in tasks to a stated accuracy.

Measured on a 2-core CPU: reverse about 20 s, dates about 25 s (each on one core under -n 2).
"""
import pytest

from minis2s.train import TrainConfig, fit


def _fit(tmp_path, **kw):
    cfg = TrainConfig(out=str(tmp_path / "run"), quiet=True, **kw)
    return fit(cfg, log=lambda m: None)


def test_reverse_is_learned_to_95_percent_exact_match(tmp_path):
    result = _fit(tmp_path, task="reverse", epochs=6, seed=0)
    assert result["test"]["exact_match"] >= 0.95, result["test"]
    # The longer split is a length-generalisation probe: reported, not asserted.
    print("reverse test-long exact match:", result["test-long"]["exact_match"])


def test_dates_are_learned_to_98_percent_exact_match(tmp_path):
    result = _fit(tmp_path, task="dates", epochs=3, n_train=6000, seed=0)
    assert result["test"]["exact_match"] >= 0.98, result["test"]


# The Transformer (minis2s train --arch transformer), smaller than its command-line defaults so
# that it fits the CI budget: d_model 64, 2 + 2 layers, no dropout, a short warm-up to a high
# peak rate. Not yet measured on a quiet machine: on a busy 2-core one (load average 5 to 7,
# other processes running) reverse took 88 s and dates 108 s alone (-n 0), and 132 s and 222 s
# inside the whole suite under -n 2 (load 7.5). Dates reached 98.1% there: little margin.
TRANSFORMER = dict(arch="transformer", hidden_size=64, encoder_layers=2, decoder_layers=2,
                   dropout=0.0, lr=3e-3, seed=0, select_metric="exact_match")


def test_transformer_reverse_is_learned_to_95_percent_exact_match(tmp_path):
    result = _fit(tmp_path, task="reverse", epochs=6, warmup_steps=200, **TRANSFORMER)
    print("transformer reverse test exact match:", result["test"]["exact_match"])
    assert result["test"]["exact_match"] >= 0.95, result["test"]
    print("transformer reverse test-long exact match:", result["test-long"]["exact_match"])


def test_transformer_dates_are_learned_to_98_percent_exact_match(tmp_path):
    result = _fit(tmp_path, task="dates", epochs=6, n_train=10000, warmup_steps=150, **TRANSFORMER)
    print("transformer dates test exact match:", result["test"]["exact_match"])
    assert result["test"]["exact_match"] >= 0.98, result["test"]
