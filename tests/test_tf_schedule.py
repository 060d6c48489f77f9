"""Scheduled sampling (minis2s/tf_schedule.py): the ratio per epoch, its refusals, and its use
by the trainer and the command line."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from minis2s.tf_schedule import check_tf_schedule, tf_ratio_for_epoch
from minis2s.train import TrainConfig, fit

REPO = Path(__file__).resolve().parents[1]


def ratios(schedule, tf_ratio=1.0, decay=None, minimum=0.0, epochs=6):
    cfg = SimpleNamespace(tf_schedule=schedule, tf_ratio=tf_ratio, tf_decay=decay, tf_min=minimum)
    return [tf_ratio_for_epoch(cfg, e) for e in range(1, epochs + 1)]


def test_constant_is_the_ratio_at_every_epoch_also_for_a_bare_config():
    assert ratios("constant", 0.75) == [0.75] * 6
    assert tf_ratio_for_epoch(SimpleNamespace(tf_ratio=0.5), 9) == 0.5     # fields absent: constant


def test_linear_subtracts_the_decay_per_epoch_down_to_the_floor():
    assert ratios("linear", 1.0, 0.25) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    assert ratios("linear", 0.9, 0.3, minimum=0.2) == pytest.approx([0.9, 0.6, 0.3, 0.2, 0.2, 0.2])


def test_exponential_multiplies_by_the_decay_per_epoch():
    assert ratios("exponential", 1.0, 0.5, epochs=4) == pytest.approx([1.0, 0.5, 0.25, 0.125])
    assert ratios("exponential", 0.8, epochs=3) == pytest.approx([0.8, 0.64, 0.512])  # default 0.8


def test_inverse_sigmoid_starts_at_the_ratio_stays_high_then_falls():
    k = 4.0
    got = ratios("inverse-sigmoid", 1.0, k, epochs=30)
    expected = [(k + 1) / (k + math.exp(i / k)) for i in range(30)]     # Bengio et al., scaled
    assert got == pytest.approx(expected)
    assert got[0] == 1.0 and got[1] > 0.94 and got[-1] < 0.01
    assert all(a > b for a, b in zip(got, got[1:]))                      # strictly decreasing
    assert 0.0 <= ratios("inverse-sigmoid", 1.0, 5.0, epochs=4000)[-1] < 1e-100   # no overflow


@pytest.mark.parametrize("schedule, ratio, decay, minimum, message", [
    ("cosine", 1.0, None, 0.0, "--tf-schedule must be one of"),
    ("constant", 1.0, 0.5, 0.0, "--tf-decay needs a --tf-schedule that decays"),
    ("linear", 1.0, 0.0, 0.0, "--tf-decay for the linear schedule must be > 0"),
    ("exponential", 1.0, 1.0, 0.0, "must be in (0, 1)"),
    ("inverse-sigmoid", 1.0, 0.5, 0.0, "must be >= 1"),
    ("linear", 0.5, 0.1, 0.6, "--tf-min (0.6) is above the starting --tf-ratio (0.5)"),
    ("linear", 1.5, 0.1, 0.0, "--tf-ratio must be in [0, 1]"),
    ("exponential", 1.0, float("nan"), 0.0, "must be in (0, 1)"),
])
def test_impossible_settings_are_refused_naming_the_option(schedule, ratio, decay, minimum, message):
    with pytest.raises(ValueError) as err:
        check_tf_schedule(schedule, ratio, decay, minimum)
    assert message in str(err.value)


def test_the_trainer_uses_the_scheduled_ratio_of_each_epoch(tmp_path):
    """Epoch 1 of a linear schedule from 1.0 is plain teacher forcing, bit for bit the same as a
    constant run; with decay 1.0 epoch 2 feeds the model's own argmax everywhere (ratio 0), so
    its training loss differs, and a constant ratio of 0 from the start reproduces that epoch's
    data-independent part: its first epoch differs from teacher forcing too."""
    tiny = dict(task="dates", n_train=120, n_valid=20, n_test=20, emb_size=8, hidden_size=16,
                batch_size=40, dropout=0.0, quiet=True, valid_decode_limit=5, epochs=2)

    def train_losses(name, **kw):
        fit(TrainConfig(out=str(tmp_path / name), **tiny, **kw), log=lambda m: None)
        lines = (tmp_path / name / "log.jsonl").read_text().splitlines()
        return [json.loads(line)["train_loss"] for line in lines]

    constant = train_losses("constant")
    scheduled = train_losses("linear", tf_schedule="linear", tf_decay=1.0)
    never = train_losses("zero", tf_ratio=0.0)
    assert scheduled[0] == constant[0]
    assert scheduled[1] != constant[1]
    assert never[0] != constant[0]


def test_the_command_line_refuses_a_bad_schedule_with_exit_2_before_any_work(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "minis2s", "train", "--tf-schedule", "exponential",
                        "--tf-decay", "1.5", "--out", "run"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("minis2s: error: --tf-decay for the exponential schedule must be "
                                "in (0, 1) (factor per epoch), got 1.5")
    assert not (tmp_path / "run").exists()


def test_a_hand_edited_schedule_in_a_run_directory_is_refused_on_resume_naming_the_file(tmp_path, capsys):
    from minis2s.cli import main
    run = tmp_path / "run"
    fit(TrainConfig(task="dates", n_train=60, n_valid=10, n_test=10, emb_size=8, hidden_size=16,
                    epochs=1, quiet=True, valid_decode_limit=5, out=str(run)), log=lambda m: None)
    config = json.loads((run / "config.json").read_text())
    config["train"].update(tf_schedule="exponential", tf_decay=2.0)
    (run / "config.json").write_text(json.dumps(config))
    before = (run / "last.npz").read_bytes()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "--tf-decay for the exponential schedule must be in (0, 1)" in err
    assert (run / "last.npz").read_bytes() == before
