"""The training procedure: exact resume, best/last checkpoints, early stopping, NaN handling."""
import json

import numpy as np
import pytest

import minis2s
from minis2s.checkpoint import load_checkpoint
from minis2s.train import TrainConfig, TrainingError, fit

TINY = dict(task="dates", n_train=200, n_valid=30, n_test=30, emb_size=8, hidden_size=16,
            batch_size=32, dropout=0.3, quiet=True, valid_decode_limit=10)


def _weights(path):
    return load_checkpoint(path)["model"]


def test_a_run_resumed_after_2_epochs_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    full = fit(TrainConfig(out=str(tmp_path / "full"), epochs=4, **TINY), log=lambda m: None)
    fit(TrainConfig(out=str(tmp_path / "half"), epochs=2, **TINY), log=lambda m: None)
    fit(TrainConfig(epochs=4, quiet=True), resume=str(tmp_path / "half"), log=lambda m: None)
    a, b = _weights(tmp_path / "full" / "last.npz"), _weights(tmp_path / "half" / "last.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    log_a = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "half" / "log.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in log_a] == [r["train_loss"] for r in log_b]
    assert full["test"]["exact_match"] >= 0.0


def test_best_checkpoint_and_load_translate(tmp_path):
    fit(TrainConfig(out=str(tmp_path / "run"), epochs=2, **TINY), log=lambda m: None)
    model = minis2s.load(tmp_path / "run")
    out = model.translate(["23 Nov 2026", "2026년 1월 5일"], beam_size=3)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    detailed = model.translate(["1 Jan 2000"], beam_size=2, n_best=2, return_details=True)
    assert len(detailed[0]) == 2 and detailed[0][0].score >= detailed[0][1].score
    att = detailed[0][0].attention
    assert att.shape[1] == len("1 Jan 2000") + 1
    np.testing.assert_allclose(att.sum(axis=1), 1.0, rtol=1e-5)


def test_early_stopping_stops_before_the_last_epoch(tmp_path):
    logs = []
    fit(TrainConfig(out=str(tmp_path / "run"), epochs=30, patience=1, lr=1e-9, **TINY), log=logs.append)
    assert any("early stopping" in m for m in logs)
    n_epochs = len((tmp_path / "run" / "log.jsonl").read_text().splitlines())
    assert n_epochs < 30


def test_a_nan_loss_stops_with_epoch_and_iteration_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fit(TrainConfig(out=str(run), epochs=1, **TINY), log=lambda m: None)
    before = (run / "last.npz").read_bytes()
    import minis2s.models.seq2seq as s2s
    real_loss = s2s.Seq2Seq.loss
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        out = real_loss(self, *args, **kwargs)
        return out * float("nan") if calls["n"] == 3 else out
    monkeypatch.setattr(s2s.Seq2Seq, "loss", poisoned)
    with pytest.raises(TrainingError, match=r"epoch 2, iteration 10;"):
        fit(TrainConfig(epochs=3, quiet=True), resume=str(run), log=lambda m: None)
    assert (run / "last.npz").read_bytes() == before
    calls["n"] = 0
    monkeypatch.setattr(s2s.Seq2Seq, "loss", poisoned)
    skip = dict(TINY, nan_policy="skip")
    fit(TrainConfig(out=str(tmp_path / "skip"), epochs=1, **skip), log=lambda m: None)
    record = json.loads((tmp_path / "skip" / "log.jsonl").read_text().splitlines()[0])
    assert record["skipped_batches"] == 1


def test_learning_rate_halves_every_epoch_from_lr_decay_start_with_sgd(tmp_path):
    from minis2s.train import _lr_for_epoch
    cfg = TrainConfig(lr=0.4, lr_decay_start=2)
    assert [_lr_for_epoch(cfg, e) for e in (1, 2, 3, 4)] == [0.4, 0.2, 0.1, 0.05]
    assert _lr_for_epoch(TrainConfig(lr=0.4), 9) == 0.4             # no schedule: constant
    fit(TrainConfig(out=str(tmp_path / "sgd"), epochs=3, optimizer="sgd", lr=0.4,
                    lr_decay_start=2, **TINY), log=lambda m: None)
    log = [json.loads(x) for x in (tmp_path / "sgd" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log] == [0.4, 0.2, 0.1]
    assert log[-1]["train_loss"] < log[0]["train_loss"]              # SGD does train


def test_the_evaluator_is_an_engine_whose_sums_equal_the_teacher_forced_loss(tmp_path):
    import grad
    from minis2s.data.batching import collate
    from minis2s.engine import Engine
    from minis2s.runs import prepare_data
    from minis2s.train import build_model, make_evaluator, to_device
    cfg = TrainConfig(**TINY)
    prep = prepare_data(cfg)
    model = build_model(dict(src_vocab_size=len(prep.src_vocab), tgt_vocab_size=len(prep.tgt_vocab),
                             emb_size=8, hidden_size=16, num_layers=1, dropout=0.0, pad_idx=0,
                             attention="general", input_feeding=True), seed=0)
    src_ids, tgt_ids = prep.ids["valid"]
    batches = [collate(src_ids, tgt_ids, range(i, min(i + 8, len(src_ids)))) for i in range(0, len(src_ids), 8)]
    evaluator = make_evaluator(model)
    assert isinstance(evaluator, Engine)
    with grad.no_grad():
        sums = evaluator.run(batches, max_epochs=1).metrics
        expected = sum(model.loss(*to_device(b), reduction="sum").item() for b in batches)
    assert sums["tokens"] == sum(b.n_tokens for b in batches)
    assert sums["nll"] == pytest.approx(expected, rel=1e-6)
    assert 0 <= sums["correct"] <= sums["tokens"]


def test_resume_trims_log_lines_written_after_the_checkpoint_mid_epoch_or_cut_short(tmp_path):
    from minis2s.train import _trim_log
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"epoch": e, "iteration": 10 * e}) + "\n" for e in (1, 2, 3))
                   + '{"epoch": 4, "itera', encoding="utf-8")
    _trim_log(log, 25)            # a Ctrl-C checkpoint in the middle of epoch 3 (iteration 25)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [1, 2]
