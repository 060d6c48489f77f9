"""Learning tests: the real model learns the real built-in tasks to a stated accuracy.

Measured on a 2-core CPU: reverse about 20 s, dates about 33 s (each on one core under -n 2).
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
    # 4 epochs: with 3, seed 0 ended at 96.8% with OpenBLAS's Haswell kernel at 1 thread and
    # 99.7-100% elsewhere (2026-12-03), a margin that the last bits of any sum can take away;
    # with 4 it reached 99.9% with both the Haswell and the SkylakeX kernel.
    result = _fit(tmp_path, task="dates", epochs=4, n_train=6000, seed=0)
    assert result["test"]["exact_match"] >= 0.98, result["test"]


# The Transformer (minis2s train --arch transformer), smaller than its command-line defaults so
# that it fits the CI budget: d_model 64, 2 + 2 layers, no dropout, a short warm-up to a high
# peak rate. Measured on an idle 2-core machine (-n 0): dates reached 99.2% in 65 s with 8 epochs
# (98.1% with 6, too little margin); inside the whole suite under -n 2 reverse took 32 s.
TRANSFORMER = dict(arch="transformer", hidden_size=64, encoder_layers=2, decoder_layers=2,
                   dropout=0.0, lr=3e-3, seed=0, select_metric="exact_match")


def test_transformer_reverse_is_learned_to_95_percent_exact_match(tmp_path):
    result = _fit(tmp_path, task="reverse", epochs=6, warmup_steps=200, **TRANSFORMER)
    print("transformer reverse test exact match:", result["test"]["exact_match"])
    assert result["test"]["exact_match"] >= 0.95, result["test"]
    print("transformer reverse test-long exact match:", result["test-long"]["exact_match"])


def test_transformer_dates_are_learned_to_98_percent_exact_match(tmp_path):
    result = _fit(tmp_path, task="dates", epochs=8, n_train=10000, warmup_steps=150, **TRANSFORMER)
    print("transformer dates test exact match:", result["test"]["exact_match"])
    assert result["test"]["exact_match"] >= 0.98, result["test"]
