"""Reliability: interruptions, locks, disk and numerical faults, bad data files and damaged model
directories, each run the way a user meets them: a real ``minis2s`` subprocess, or
``minis2s.cli.main`` in-process where a fault has to be injected (docs/reliability.md)."""
import errno
import json
import math
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minis2s
from minis2s import checkpoint as ck
from minis2s import cli
from minis2s.checkpoint import load_checkpoint
from test_checkpoint import flip_stored_byte

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--task", "dates", "--n-train", "1500", "--n-valid", "40", "--n-test", "40",
         "--emb-size", "16", "--hidden-size", "32", "--batch-size", "16", "--quiet", "--seed", "3"]
TINY = [*SMALL, "--n-train", "200"]          # 13 batches an epoch, for the in-process runs


def env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run(args, cwd, input=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "minis2s", *args], cwd=cwd, input=input,
                          capture_output=True, text=True, timeout=timeout, env=env())


def start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "minis2s", *args], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _same_weights(a, b):
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def _same_checkpoint(a, b):
    """Weights, optimizer state (moments, steps) and trainer state (position, best score, random
    generators) all equal, bit for bit."""
    _same_weights(a, b)
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["trainer"] == cb["trainer"]
    assert ca["optimizer"]["param_groups"] == cb["optimizer"]["param_groups"]
    for sa, sb in zip(ca["optimizer"]["state"], cb["optimizer"]["state"], strict=True):
        assert sa.keys() == sb.keys()
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def _test_lines(stdout):
    """The printed test metrics (``test: exact match ...``)."""
    return [line for line in stdout.splitlines() if line.startswith("test:")]


def _epochs_in_log(run_dir):
    return [json.loads(line)["epoch"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _temporaries(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 3-epoch run of SMALL: what a killed-and-resumed run and a run that saw
    a second ``train`` refused must end equal to."""
    cwd = tmp_path_factory.mktemp("reference")
    r = run(["train", *SMALL, "--epochs", "3", "--out", "ref"], cwd)
    assert r.returncode == 0, r.stderr
    assert _test_lines(r.stdout)
    return cwd / "ref", r.stdout


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """``minis2s.cli.main`` run in ``tmp_path``, as the command runs it (no MINIS2S_DEBUG)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINIS2S_DEBUG", raising=False)
    return cli.main


# ----------------------------------------------------------------------------- interruption
def test_ctrl_c_saves_a_resumable_checkpoint_exits_130_and_resume_equals_uninterrupted(tmp_path):
    reference = run(["train", *SMALL, "--epochs", "2", "--out", "ref"], tmp_path)
    assert reference.returncode == 0, reference.stderr
    proc = start(["train", *SMALL, "--epochs", "2", "--out", "run"], tmp_path)
    # Interrupt in the middle of epoch 2 (after epoch 1's checkpoint exists).
    assert wait_for(lambda: (tmp_path / "run" / "log.jsonl").exists())
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resumable checkpoint" in out + err and "Traceback" not in err
    state = load_checkpoint(tmp_path / "run" / "last.npz")["trainer"]
    assert state["epoch"] == 2 and 0 < state["iteration_in_epoch"] < 94
    resumed = run(["train", "--resume", "run", "--epochs", "2", "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _same_weights(tmp_path / "ref" / "last.npz", tmp_path / "run" / "last.npz")


KILL_POINTS = [   # (what, when the kill is due, extra delay)
    ("as the first checkpoint appears", lambda d: (d / "last.npz").exists(), 0.0),
    ("in the middle of epoch 2", lambda d: (d / "last.npz").exists(), 0.25),
    ("just after epoch 2 was saved", lambda d: (d / "log.jsonl").exists()
     and len((d / "log.jsonl").read_text().splitlines()) >= 2, 0.0),
]


def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint_and_resume_equals_uninterrupted(tmp_path, reference):
    ref_dir, ref_out = reference
    for i, (what, due, delay) in enumerate(KILL_POINTS):
        run_dir = tmp_path / f"k{i}"
        proc = start(["train", *SMALL, "--epochs", "3", "--out", run_dir.name], tmp_path)
        assert wait_for(lambda: due(run_dir)), what
        time.sleep(delay)
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL, f"{what}: the run ended before it was killed"
        state = load_checkpoint(run_dir / "last.npz")["trainer"]      # complete, never half-written
        # A kill during a write leaves at most a temporary file beside the checkpoint; plant one
        # (half a checkpoint) so that every kill point shows that no loader looks at it.
        half = (run_dir / "last.npz").read_bytes()
        (run_dir / ".last.npz.k1ll3d.tmp").write_bytes(half[: len(half) // 2])
        resumed = run(["train", "--resume", run_dir.name, "--epochs", "3", "--quiet"], tmp_path)
        assert resumed.returncode == 0, (what, resumed.stderr)          # the lock died with the process
        assert (f"resuming {run_dir.name} at epoch {state['epoch']}, iteration {state['iteration']}"
                in resumed.stdout), what
        # It continued exactly where the checkpoint was: the end equals the uninterrupted run's.
        _same_checkpoint(ref_dir / "last.npz", run_dir / "last.npz")
        _same_weights(ref_dir / "best.npz", run_dir / "best.npz")
        assert _test_lines(resumed.stdout) == _test_lines(ref_out), what
        assert _temporaries(run_dir) == []                 # the resumed run, holding the lock, removed it
        (run_dir / ".best.npz.k1ll3d.tmp").write_bytes(half[: len(half) // 3])
        minis2s.load(run_dir)                              # loading for translation ignores one


def test_sigkill_before_the_first_checkpoint_resume_says_so_and_the_same_command_starts_over(tmp_path):
    args = ["train", *SMALL, "--epochs", "1", "--out", "run"]
    proc = start(args, tmp_path)
    assert wait_for(lambda: (tmp_path / "run" / "config.json").exists())   # epoch 1 has begun
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "run" / "last.npz").exists()
    resumed = run(["train", "--resume", "run", "--epochs", "1", "--quiet"], tmp_path)
    assert resumed.returncode == 2
    assert "last.npz: checkpoint not found" in resumed.stderr and "Traceback" not in resumed.stderr
    again = run(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "model saved in run" in again.stdout


class _Killed(BaseException):
    """Stands for SIGKILL at one exact instant: nothing after it runs (no handler catches it)."""


@pytest.mark.parametrize("after", ["last.npz", "best.npz"])
def test_a_kill_between_the_end_of_epoch_writes_loses_nothing(in_process, tmp_path, monkeypatch, after):
    import minis2s.trainer_core as train      # where the checkpoints are saved
    assert in_process(["train", *TINY, "--epochs", "2", "--out", "ref"]) == 0
    assert load_checkpoint(tmp_path / "ref" / "best.npz")["trainer"]["epoch"] == 2   # epoch 2 improved
    real_save = train.save_checkpoint

    def dies_after(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        state = args[2] if len(args) > 2 else kwargs.get("trainer_state", {})
        if Path(path).name == after and state.get("epoch") == 2:
            raise _Killed
    monkeypatch.setattr(train, "save_checkpoint", dies_after)
    with pytest.raises(_Killed):
        in_process(["train", *TINY, "--epochs", "2", "--out", "run"])
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert in_process(["train", "--resume", "run", "--epochs", "2", "--quiet"]) == 0
    assert _epochs_in_log(tmp_path / "run") == [1, 2]
    _same_weights(tmp_path / "ref" / "best.npz", tmp_path / "run" / "best.npz")


def test_a_second_train_into_a_directory_in_use_is_refused_and_the_first_run_is_unaffected(tmp_path, reference):
    ref_dir, ref_out = reference
    proc = start(["train", *SMALL, "--epochs", "3", "--out", "run"], tmp_path)
    try:
        assert wait_for(lambda: (tmp_path / "run" / ".lock").exists())
        second = run(["train", "--resume", "run", "--epochs", "3", "--quiet"], tmp_path)
        first_still_running = proc.poll() is None
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert second.returncode == 2, second.stderr
    assert "in use by another minis2s process" in second.stderr
    assert first_still_running                  # refused because of the live lock, not afterwards
    # The first run went on to the end as if nothing had happened.
    assert proc.returncode == 0, err
    assert "model saved in run" in out
    _same_checkpoint(ref_dir / "last.npz", tmp_path / "run" / "last.npz")
    assert _test_lines(out) == _test_lines(ref_out)


# ----------------------------------------------------------------------------- disk faults
def _one_epoch_run(in_process, tmp_path):
    """Train the tiny run for one epoch into tmp_path/run; its last.npz and that file's bytes."""
    assert in_process(["train", *TINY, "--epochs", "1", "--out", "run"]) == 0
    last = tmp_path / "run" / "last.npz"
    return last, last.read_bytes()


@pytest.mark.parametrize("where", ["rename", "write"])
def test_a_full_disk_during_train_exits_1_naming_the_file_and_keeps_the_previous_checkpoint(
        in_process, tmp_path, monkeypatch, capsys, where):
    last, before = _one_epoch_run(in_process, tmp_path)
    real_replace, real_savez = ck.os.replace, ck.np.savez
    if where == "rename":          # the temporary file was written, the rename fails
        def full(src, dst):
            if str(dst).endswith("last.npz"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src, None, dst)
            return real_replace(src, dst)
        monkeypatch.setattr(ck.os, "replace", full)
    else:                          # the write itself fails half-way
        def full(f, **arrays):
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(ck.np, "savez", full)
    capsys.readouterr()
    code = in_process(["train", "--resume", "run", "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    monkeypatch.setattr(ck.os, "replace", real_replace)
    monkeypatch.setattr(ck.np, "savez", real_savez)
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("minis2s: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "No space left on device" in errors[0]
    # the file being written is named (best.npz comes first when the epoch improved, last.npz,
    # the resume point, is always written last), never the temporary file
    assert any(os.path.join("run", name) in errors[0] for name in ("best.npz", "last.npz")), errors[0]
    assert ".tmp" not in errors[0], errors[0]
    assert "previously saved checkpoints are untouched" in errors[0]
    assert last.read_bytes() == before                                  # the previous checkpoint,
    assert load_checkpoint(last)["trainer"]["epoch"] == 1               # intact and loadable
    assert _temporaries(tmp_path / "run") == []
    assert in_process(["train", "--resume", "run", "--epochs", "2", "--quiet"]) == 0   # space freed


# ----------------------------------------------------------------------------- numerical faults
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_nan_or_inf_loss_stops_train_with_exit_1_naming_epoch_and_iteration(
        in_process, tmp_path, monkeypatch, capsys, bad):
    import minis2s.models.seq2seq as s2s
    last, before = _one_epoch_run(in_process, tmp_path)
    done = load_checkpoint(last)["trainer"]["iteration"]
    real_loss = s2s.Seq2Seq.loss
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        out = real_loss(self, *args, **kwargs)
        return out * float(bad) if calls["n"] == 3 else out          # the 3rd batch of epoch 2
    monkeypatch.setattr(s2s.Seq2Seq, "loss", poisoned)
    capsys.readouterr()
    code = in_process(["train", "--resume", "run", "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"minis2s: error: the loss became {bad} at epoch 2, iteration {done + 3};" in err
    assert "the last good checkpoint in run is untouched" in err and "Traceback" not in err
    assert last.read_bytes() == before


def test_a_learning_rate_that_overflows_the_weights_stops_train_with_exit_1(tmp_path):
    # No fault injected: the first SGD step of size ~1e30 makes the next forward pass overflow.
    # Whether that overflow ends as a NaN loss (Haswell kernels) or a huge finite one (AVX-512)
    # depends on the BLAS kernel; the guard stops at the same step either way.
    r = run(["train", *TINY, "--epochs", "1", "--optimizer", "sgd", "--lr", "1e30", "--out", "run"],
            tmp_path)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr                # one error line, no warning per operation
    assert lines[0].startswith("minis2s: error: ")
    assert "floating-point overflow" in lines[0] and "forward pass" in lines[0]
    assert "at epoch 1, iteration 2; no checkpoint had been saved yet" in lines[0]
    assert not (tmp_path / "run" / "last.npz").exists()
    assert not (tmp_path / "run" / "best.npz").exists()


def test_an_infinite_learning_rate_stops_at_the_first_update_naming_the_parameters(tmp_path):
    r = run(["train", *TINY, "--epochs", "1", "--optimizer", "sgd", "--lr", "inf", "--out", "run"],
            tmp_path)
    assert r.returncode == 1, r.stderr
    assert "a parameter became non-finite in the update (" in r.stderr
    assert "encoder.embedding.weight" in r.stderr and "at epoch 1, iteration 1;" in r.stderr
    assert "--nan-policy skip cannot undo an update" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run" / "last.npz").exists()


def _overflow_in(monkeypatch, phase, on_call=3):
    """Make the ``on_call``-th training step overflow in float32 in ``phase`` ("forward":
    inside the loss, whose value stays finite; "backward": a gradient becomes inf), on the
    host, the same on every CPU."""
    import minis2s.models.seq2seq as s2s
    real_loss = s2s.Seq2Seq.loss
    calls = {"n": 0}

    def loss(self, *args, **kwargs):
        calls["n"] += 1
        out = real_loss(self, *args, **kwargs)
        if calls["n"] == on_call:
            if phase == "forward":
                big = np.full(3, 3e38, dtype=np.float32)
                assert np.isfinite(big * np.float32(1.0)).all()
                _ = big * np.float32(10.0)              # overflows: flagged, result unused
            else:
                from grad.tensor import make
                out = make(out.data, (out,), lambda g: (g * float("inf"),), "poison")
        return out
    monkeypatch.setattr(s2s.Seq2Seq, "loss", loss)


@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_an_overflow_flag_stops_train_even_when_every_value_stays_finite(
        in_process, tmp_path, monkeypatch, capsys, phase):
    last, before = _one_epoch_run(in_process, tmp_path)
    done = load_checkpoint(last)["trainer"]["iteration"]
    _overflow_in(monkeypatch, phase)
    capsys.readouterr()
    code = in_process(["train", "--resume", "run", "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    expected = ("a floating-point overflow in the forward pass" if phase == "forward"
                else "the gradient norm became ")
    assert f"minis2s: error: {expected}" in err and f"at epoch 2, iteration {done + 3};" in err
    assert "the last good checkpoint in run is untouched" in err
    assert last.read_bytes() == before


def test_nan_policy_skip_skips_flagged_batches_with_one_warning_per_run(
        in_process, tmp_path, monkeypatch, capsys):
    import minis2s.models.seq2seq as s2s
    real_loss = s2s.Seq2Seq.loss

    def loss(self, *args, **kwargs):                   # every batch overflows in its forward
        _ = np.full(2, 3e38, dtype=np.float32) * np.float32(10.0)
        return real_loss(self, *args, **kwargs)
    monkeypatch.setattr(s2s.Seq2Seq, "loss", loss)
    code = in_process(["train", *TINY, "--epochs", "1", "--out", "run", "--nan-policy", "skip"])
    err = capsys.readouterr().err
    assert code == 0, err
    warnings_ = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings_) == 1 and "skipped the batch at epoch 1, iteration 1" in warnings_[0]
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert log["skipped_batches"] == 13            # every one of the epoch's 13 batches


def test_overflows_during_validation_are_reported_once_per_kind(in_process, tmp_path, monkeypatch,
                                                                capsys):
    import minis2s.train as tr
    real_eval = tr.make_evaluator

    def noisy(model):
        evaluator = real_eval(model)
        real_step = evaluator.process_fn

        def step(engine, batch):
            _ = np.full(2, 3e38, dtype=np.float32) * np.float32(10.0)      # overflow
            _ = np.zeros(2, dtype=np.float32) * np.float32(np.inf)          # invalid
            return real_step(engine, batch)
        evaluator.process_fn = step
        return evaluator
    monkeypatch.setattr(tr, "make_evaluator", noisy)
    code = in_process(["train", *TINY, "--epochs", "2", "--out", "run"])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("minis2s: warning")]
    assert len(lines) == 2, err                   # 2 kinds, many validation batches, 3 evaluations
    assert any("floating-point overflow outside a training step" in line for line in lines)
    assert any("invalid floating-point operation" in line for line in lines)


def test_the_logged_parameter_norm_is_finite_for_weights_near_1e30():
    # float32 squares of 1e30 overflow; the norm is summed in float64.
    from minis2s.guard import param_norm
    import grad
    p = grad.nn.Parameter(grad.tensor(np.full((4, 5), 1e30, dtype=np.float32)).data)
    assert param_norm([p]) == pytest.approx(1e30 * math.sqrt(20), rel=1e-6)


def test_huge_perplexities_print_in_g_form():
    from minis2s.metrics import format_ppl
    assert format_ppl(1.00316) == "  1.0032"
    assert format_ppl(math.exp(700)) == "1.014e+304"
    assert format_ppl(math.inf) == "     inf"


# ----------------------------------------------------------------------------- data files
DATA_CASES = {
    "missing": (None, "missing.tsv: file not found"),
    "empty": (b"", "empty.tsv"),
    "non_utf8": (b"a\tb\nc\td\n\xff\xfe\tx\n", "non_utf8.tsv:3"),
    "no_tab": (b"a\tb\nno tab here\n", "no_tab.tsv:2"),
    "empty_side": (b"a\tb\nc\t \n", "empty_side.tsv:2"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_training_files_are_one_clear_line_with_exit_code_2(tmp_path, case):
    content, expected = DATA_CASES[case]
    name = f"{case}.tsv"
    if content is not None:
        (tmp_path / name).write_bytes(content)
    (tmp_path / "valid.tsv").write_text("a\tb\n", encoding="utf-8")
    r = run(["train", "--train", name, "--valid", "valid.tsv", "--quiet"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unequal_line_counts_name_both_files(tmp_path):
    (tmp_path / "s.txt").write_text("a\nb\nc\n")
    (tmp_path / "t.txt").write_text("x\ny\n")
    r = run(["train", "--train-src", "s.txt", "--train-tgt", "t.txt", "--valid-src", "s.txt",
             "--valid-tgt", "t.txt", "--quiet"], tmp_path)
    assert r.returncode == 2 and "s.txt" in r.stderr and "t.txt" in r.stderr


def test_crlf_bom_and_a_long_line_are_handled(tmp_path):
    rows = [f"{i} {'ab' * (i % 5)}\t{'ab' * (i % 5)} {i}" for i in range(60)]
    text = "\ufeff" + "\r\n".join(rows) + "\r\n"
    (tmp_path / "train.tsv").write_text(text, encoding="utf-8")
    (tmp_path / "valid.tsv").write_text("\n".join(rows[:8]) + "\n" + "x" * 1_000_000 + "\ty\n",
                                        encoding="utf-8")
    r = run(["train", "--train", "train.tsv", "--valid", "valid.tsv", "--tokenizer", "space",
             "--epochs", "1", "--emb-size", "8", "--hidden-size", "8", "--quiet", "--out", "m"], tmp_path)
    assert r.returncode == 0, r.stderr
    vocab = json.loads((tmp_path / "m" / "src_vocab.json").read_text(encoding="utf-8"))
    assert not any("\r" in t or "\ufeff" in t for t in vocab["itos"])


# ----------------------------------------------------------------------------- model directories
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("model")
    r = run(["train", *SMALL, "--n-train", "200", "--epochs", "1", "--out", "m"], cwd)
    assert r.returncode == 0, r.stderr
    return cwd / "m"


def _broken_copy(model_dir, tmp_path, damage):
    target = tmp_path / "broken"
    shutil.copytree(model_dir, target)
    damage(target)
    return target


def _truncate(p):
    (p / "best.npz").write_bytes((p / "best.npz").read_bytes()[:500])


def _wrong_vocab(p):
    d = json.loads((p / "tgt_vocab.json").read_text(encoding="utf-8"))
    d["itos"] = d["itos"][:-2]
    (p / "tgt_vocab.json").write_text(json.dumps(d), encoding="utf-8")


def _wrong_version(p):
    d = json.loads((p / "config.json").read_text())
    d["format_version"] = 999
    (p / "config.json").write_text(json.dumps(d))


def _wrong_shapes(p):
    d = json.loads((p / "config.json").read_text())
    d["model"]["hidden_size"] = 64
    (p / "config.json").write_text(json.dumps(d))


def _renamed_key(p):
    """A valid .npz (CRCs fine, shapes fine) in which one parameter has another name."""
    with np.load(p / "best.npz", allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["model/encoder.embedding.weights"] = arrays.pop("model/encoder.embedding.weight")
    np.savez(p / "best.npz", **arrays)


@pytest.mark.parametrize("damage,expected", [
    pytest.param(lambda p: (p / "best.npz").unlink() or (p / "last.npz").unlink(),
                 ["last.npz: checkpoint not found"], id="no_weights"),
    pytest.param(lambda p: (p / "config.json").unlink(), ["config.json: file not found"], id="no_config"),
    pytest.param(_truncate, ["best.npz: not a readable checkpoint (truncated or corrupted"],
                 id="truncated"),
    pytest.param(lambda p: flip_stored_byte(p / "best.npz"),
                 ["best.npz: corrupted entry 'model/", "CRC"], id="flipped_byte"),
    pytest.param(_wrong_vocab, ["tgt_vocab.json", "but the model was configured for"], id="wrong_vocab"),
    pytest.param(_wrong_version, ["config.json: model format version 999"], id="wrong_version"),
    pytest.param(_wrong_shapes, ["best.npz: weights do not match the config", "shape mismatch"],
                 id="wrong_shapes"),
    pytest.param(_renamed_key, ["best.npz: weights do not match the config",
                                "missing keys: encoder.embedding.weight",
                                "unexpected keys: encoder.embedding.weights"], id="renamed_key"),
])
def test_damaged_model_directories_are_refused_with_a_clear_message(model_dir, tmp_path, damage, expected):
    broken = _broken_copy(model_dir, tmp_path, damage)
    r = run(["translate", "--model", str(broken)], tmp_path, input="1 Jan 2000\n")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("minis2s: error: "), r.stderr
    for part in expected:
        assert part in r.stderr, (part, r.stderr)


def test_model_files_get_the_usual_permissions(model_dir):
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("config.json", "src_vocab.json", "tgt_vocab.json", "best.npz", "last.npz"):
        mode = stat.S_IMODE((model_dir / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode), oct(umask))


def test_translate_time_input_empty_lines_unknown_tokens_long_input_any_unicode(model_dir, tmp_path):
    text = "1 Jan 2000\n\n§¶ 日本 🙂 2000\n" + "9" * 500 + "\n"
    r = run(["translate", "--model", str(model_dir), "--beam-size", "2"], tmp_path, input=text)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 4                            # one output per input line
    assert "mapped to <unk>" in r.stderr
    assert "truncated" in r.stderr


def _translate_on_a_terminal(model_dir, cwd, typed: bytes):
    """Run ``minis2s translate --model DIR`` with standard input on a pseudo-terminal: wait for
    what it says on stderr before typing (as a person would), type ``typed``, then Ctrl-D."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "minis2s", "translate", "--model", str(model_dir),
                             "--beam-size", "2"], cwd=cwd, env=env(), stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 60)
        assert ready, "nothing on stderr while waiting for the terminal"
        first = proc.stderr.readline().decode("utf-8")
        os.write(master, typed + b"\x04")                   # a line, then Ctrl-D (EOF)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(master)
    return proc.returncode, first, out.decode("utf-8"), err.decode("utf-8")


def test_translate_with_a_terminal_on_stdin_prints_a_one_line_hint_then_reads_it(model_dir, tmp_path):
    code, first, out, rest = _translate_on_a_terminal(model_dir, tmp_path, b"1 Jan 2000\n")
    assert code == 0, first + rest
    assert first == ("minis2s: reading sentences from standard input, one per line "
                     "(Ctrl-D to end)\n")
    assert "reading sentences" not in rest                # said once
    piped = run(["translate", "--model", str(model_dir), "--beam-size", "2"], tmp_path,
                input="1 Jan 2000\n")
    assert piped.returncode == 0, piped.stderr
    assert "reading sentences" not in piped.stderr         # no hint when stdin is a pipe
    assert len(out.splitlines()) == 1 and out == piped.stdout      # the typed line was translated
