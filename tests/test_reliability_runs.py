"""Reliability of run directories: no lost work (docs/reliability.md, "Runs and their
directories"). One trainer core (``minis2s/trainer_core.py``) serves ``train`` and ``lm train``:
the same lock and run-kind check for every kind of run, SIGTERM treated like Ctrl-C, a second
signal deferred until the save is done and a third aborting, ``lm train --resume`` continuing bit
for bit, a failed run leaving nothing behind; ``translate`` writes as it goes and ``minis2s
data`` never overwrites.

Signals and faults are placed at an exact step of a real ``minis2s`` subprocess: a few lines of
Python (``run_patched``) wrap one function before ``minis2s.cli.main`` runs, and the signal is a
real one (``os.kill`` of the process itself), handled as one from outside would be.
"""
import json
import os
import signal
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

import minis2s
from minis2s.checkpoint import load_checkpoint
from minis2s.lm.training import load_lm
from minis2s.runs import RunLock
from test_reliability import (TINY, _Killed, _epochs_in_log, _same_checkpoint, _same_weights,  # noqa: F401
                              _temporaries, _test_lines, env, in_process, run, wait_for)

# TINY: 200 pairs, 13 batches an epoch, so step 16 is the 3rd batch of epoch 2.
CORPUS = [f"{a} {b} {c}" for a in ("the cat", "a dog", "my bird", "one fish")
          for b in ("sat on", "saw", "ate") for c in ("the mat", "a log", "it", "the food", "me")]
LM_TINY = ["--min-freq", "1", "--emb-size", "8", "--hidden-size", "16", "--batch-size", "4",
           "--quiet", "--seed", "1"]          # 48 training lines: 12 batches an epoch


def lm_args(corpus):
    return ["lm", "train", "--corpus", str(corpus), *LM_TINY]


def run_patched(patch: str, args, cwd, timeout=300):
    """``minis2s ARGS`` in a subprocess, after ``patch`` (Python source) has run in it."""
    code = ("import os, signal, sys\n" + textwrap.dedent(patch)
            + "\nfrom minis2s.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env())


LOSS = {"seq2seq": "minis2s.models.seq2seq.Seq2Seq", "lm": "minis2s.lm.lstm_lm.LSTMLanguageModel"}


def signal_at_step(step: int, sig: str, model: str = "seq2seq") -> str:
    """A patch: during the ``step``-th training step of the process (its forward pass: the
    training loss, which validation does not use), the process sends itself ``sig``."""
    module, cls = LOSS[model].rsplit(".", 1)
    return f"""
        import importlib
        _cls = getattr(importlib.import_module("{module}"), "{cls}")
        _real_loss, _calls = _cls.loss, [0]
        def _loss(self, *args, **kwargs):
            _calls[0] += 1
            if _calls[0] == {step}:
                os.kill(os.getpid(), signal.{sig})
            return _real_loss(self, *args, **kwargs)
        _cls.loss = _loss
        """


def signals_during_the_interrupted_save(*sigs: str) -> str:
    """A patch: while the checkpoint of an interrupted run (mid-epoch: ``iteration_in_epoch >
    0`` in its trainer state) is being written -- the new file complete, not yet renamed into
    place -- the process sends itself ``sigs``. The last.npz it replaces is first copied to
    ``before.npz`` in the working directory."""
    return f"""
        import json, shutil
        import numpy as np
        _real_savez = np.savez
        def _savez(f, **arrays):
            meta = json.loads(arrays["json/meta"].tobytes().decode("utf-8"))
            mid = meta.get("trainer", {{}}).get("iteration_in_epoch", 0) > 0
            if mid and os.path.exists("run/last.npz"):
                shutil.copy("run/last.npz", "before.npz")
            _real_savez(f, **arrays)
            if mid:
                for sig in ({", ".join(f"signal.{s}" for s in sigs)},):
                    os.kill(os.getpid(), sig)
        np.savez = _savez
        """


def _files(d):
    """Every file of a directory but the lock (whose content is the last locker's pid)."""
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name != ".lock"}


def _one_error_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minis2s: error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """An uninterrupted 2-epoch TINY seq2seq run."""
    cwd = tmp_path_factory.mktemp("tiny_reference")
    r = run(["train", *TINY, "--epochs", "2", "--out", "ref"], cwd)
    assert r.returncode == 0, r.stderr
    return cwd / "ref", r.stdout


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lm_reference(tmp_path_factory, corpus):
    """An uninterrupted 2-epoch LSTM language-model run."""
    cwd = tmp_path_factory.mktemp("lm_reference")
    r = run([*lm_args(corpus), "--epochs", "2", "--out", "ref"], cwd)
    assert r.returncode == 0, r.stderr
    return cwd / "ref", r.stdout


def new_run(kind, out, corpus):
    """The command that starts a new run of ``kind`` in ``out``."""
    return {"seq2seq": ["train", *TINY, "--epochs", "1", "--out", str(out)],
            "lm-lstm": [*lm_args(corpus), "--epochs", "1", "--out", str(out)],
            "lm-ngram": ["lm", "train", "--corpus", str(corpus), "--model", "ngram", "--order", "2",
                         "--out", str(out)]}[kind]


@pytest.fixture(scope="module")
def runs_of_each_kind(tmp_path_factory, corpus):
    """One finished run directory of each kind: seq2seq, lm-lstm, lm-ngram."""
    cwd = tmp_path_factory.mktemp("kinds")
    for kind in ("seq2seq", "lm-lstm", "lm-ngram"):
        r = run(new_run(kind, kind, corpus), cwd)
        assert r.returncode == 0, r.stderr
    return cwd


HOLDS = {"seq2seq": "holds a translation (seq2seq) run", "lm-lstm": "holds an LSTM language-model run",
         "lm-ngram": "holds an n-gram language-model run"}


def _still_usable(kind, d):
    if kind == "seq2seq":
        assert len(minis2s.load(d).translate(["1 Jan 2000"], beam_size=1)) == 1
    else:
        assert load_lm(d).score(["the cat saw it"])[0][1] == 5


# ----------------------------------------------------------------------------- one lock, one kind
@pytest.mark.parametrize("kind,holder", [(k, h) for k in HOLDS for h in HOLDS if k != h])
def test_a_new_run_refuses_a_directory_holding_a_run_of_another_kind(
        runs_of_each_kind, corpus, tmp_path, kind, holder):
    d = tmp_path / "d"
    shutil.copytree(runs_of_each_kind / holder, d)
    before = _files(d)
    r = run(new_run(kind, d.name, corpus), tmp_path)
    assert r.returncode == 2, r.stderr
    line = _one_error_line(r.stderr)
    assert f"error: d {HOLDS[holder]};" in line and "choose another --out" in line, line
    assert _files(d) == before                     # nothing overwritten, nothing added
    _still_usable(holder, d)


@pytest.mark.parametrize("command,holder,expected", [
    (["train", "--resume", "d"], "lm-lstm",
     "d holds an LSTM language-model run, not a translation (seq2seq) run; continue it with: "
     "minis2s lm train --resume d"),
    (["train", "--resume", "d"], "lm-ngram",
     "d holds an n-gram language-model run, not a translation (seq2seq) run; n-gram runs are "
     "counted in one pass and cannot be resumed"),
    (["lm", "train", "--resume", "d"], "seq2seq",
     "d holds a translation (seq2seq) run, not an LSTM language-model run; continue it with: "
     "minis2s train --resume d"),
    (["lm", "train", "--resume", "d"], "lm-ngram", "n-gram runs are counted in one pass and cannot be resumed"),
], ids=["train-lm_lstm", "train-lm_ngram", "lm_train-seq2seq", "lm_train-lm_ngram"])
def test_resume_refuses_a_directory_holding_a_run_of_another_kind(
        runs_of_each_kind, tmp_path, command, holder, expected):
    d = tmp_path / "d"
    shutil.copytree(runs_of_each_kind / holder, d)
    before = _files(d)
    r = run(command, tmp_path)
    assert r.returncode == 2, r.stderr
    assert expected in _one_error_line(r.stderr)
    assert _files(d) == before


@pytest.mark.parametrize("kind,extra,expected", [
    ("seq2seq", ["--hidden-size", "16"], "with other settings: --hidden-size 16 (the run has 32)"),
    ("lm-lstm", ["--hidden-size", "8"], "with other settings: --hidden-size 8 (the run has 16)"),
    ("lm-ngram", ["--order", "3"], "with other settings: --order 3 (the run has 2)"),
    ("seq2seq", [], "d already holds a run; continue it with --resume d or choose another --out"),
    ("lm-lstm", [], "d already holds a run; continue it with --resume d or choose another --out"),
    ("lm-ngram", [], "d already holds this n-gram model: choose another --out"),
], ids=["seq2seq-other", "lm_lstm-other", "lm_ngram-other", "seq2seq-same", "lm_lstm-same",
        "lm_ngram-same"])
def test_a_new_run_refuses_a_run_of_the_same_kind_with_other_settings_or_a_checkpoint(
        runs_of_each_kind, corpus, tmp_path, kind, extra, expected):
    d = tmp_path / "d"
    shutil.copytree(runs_of_each_kind / kind, d)
    before = _files(d)
    r = run(new_run(kind, "d", corpus) + extra, tmp_path)
    assert r.returncode == 2, r.stderr
    assert expected in _one_error_line(r.stderr)
    assert _files(d) == before


@pytest.mark.parametrize("kind", ["lm-lstm", "lm-ngram", "lm-lstm --resume"])
def test_every_kind_of_run_takes_the_run_lock(runs_of_each_kind, corpus, tmp_path, kind):
    d = tmp_path / "d"
    if kind.endswith("--resume"):
        shutil.copytree(runs_of_each_kind / "lm-lstm", d)
        command = ["lm", "train", "--resume", "d", "--epochs", "2"]
    else:
        d.mkdir()
        command = new_run(kind, "d", corpus)
    before = _files(d)
    with RunLock(d):                 # another process (this one) holds the directory
        r = run(command, tmp_path)
    assert r.returncode == 2, r.stderr
    assert "d is in use by another minis2s process (its lock is held)" in _one_error_line(r.stderr)
    assert _files(d) == before


# ----------------------------------------------------------------------------- signals
def test_sigterm_during_train_saves_a_resumable_checkpoint_exits_143_and_resume_equals_uninterrupted(
        tmp_path, tiny_reference):
    ref_dir, ref_out = tiny_reference
    r = run_patched(signal_at_step(16, "SIGTERM"), ["train", *TINY, "--epochs", "2", "--out", "run"],
                    tmp_path)
    assert r.returncode == 143, r.stderr
    assert r.stderr.strip() == ("minis2s: interrupted (SIGTERM): saved a resumable checkpoint at "
                                "epoch 2, iteration 16; continue with: minis2s train --resume run")
    state = load_checkpoint(tmp_path / "run" / "last.npz")["trainer"]
    assert (state["epoch"], state["iteration"], state["iteration_in_epoch"]) == (2, 16, 3)
    resumed = run(["train", "--resume", "run", "--epochs", "2", "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _same_checkpoint(ref_dir / "last.npz", tmp_path / "run" / "last.npz")
    _same_weights(ref_dir / "best.npz", tmp_path / "run" / "best.npz")
    assert _test_lines(resumed.stdout) == _test_lines(ref_out)


@pytest.mark.parametrize("first,second,code", [("SIGINT", "SIGTERM", 130), ("SIGTERM", "SIGINT", 143)])
def test_a_second_signal_during_the_save_waits_for_it_to_complete(tmp_path, tiny_reference, first,
                                                                  second, code):
    ref_dir, _ = tiny_reference
    patch = signal_at_step(16, first) + signals_during_the_interrupted_save(second)
    r = run_patched(patch, ["train", *TINY, "--epochs", "2", "--out", "run"], tmp_path)
    assert r.returncode == code, r.stderr
    assert "minis2s: saving a resumable checkpoint before stopping; one more interrupt aborts" in r.stderr
    assert f"interrupted ({first}): saved a resumable checkpoint at epoch 2, iteration 16" in r.stderr
    state = load_checkpoint(tmp_path / "run" / "last.npz")["trainer"]      # the save completed
    assert (state["epoch"], state["iteration_in_epoch"]) == (2, 3)
    assert _temporaries(tmp_path / "run") == []
    resumed = run(["train", "--resume", "run", "--epochs", "2", "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _same_checkpoint(ref_dir / "last.npz", tmp_path / "run" / "last.npz")


def test_a_third_signal_during_the_save_aborts_at_once_keeping_the_previous_checkpoint(
        tmp_path, tiny_reference):
    ref_dir, _ = tiny_reference
    patch = signal_at_step(16, "SIGINT") + signals_during_the_interrupted_save("SIGINT", "SIGINT")
    r = run_patched(patch, ["train", *TINY, "--epochs", "2", "--out", "run"], tmp_path)
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr
    assert ("minis2s: aborted (SIGINT, the third interrupt): the progress since the last checkpoint "
            "is lost; the last checkpoint, run/last.npz, is intact") in r.stderr
    last = tmp_path / "run" / "last.npz"
    assert last.read_bytes() == (tmp_path / "before.npz").read_bytes()   # epoch 1's, untouched
    state = load_checkpoint(last)["trainer"]
    assert (state["epoch"], state["iteration"], state["iteration_in_epoch"]) == (1, 13, 0)
    assert _temporaries(tmp_path / "run") == []                          # the half-save removed
    resumed = run(["train", "--resume", "run", "--epochs", "2", "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _same_checkpoint(ref_dir / "last.npz", last)


# ----------------------------------------------------------------------------- lm train --resume
def _log_figures(run_dir):
    how_it_ran = ("time", "blas_threads", "threads_reason")
    return [{k: v for k, v in json.loads(line).items() if k not in how_it_ran}
            for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_lm_train_interrupted_or_killed_then_resumed_equals_uninterrupted_bit_for_bit(
        tmp_path, corpus, lm_reference, sig):
    ref_dir, ref_out = lm_reference
    r = run_patched(signal_at_step(15, sig, "lm"), [*lm_args(corpus), "--epochs", "2", "--out", "run"],
                    tmp_path)
    state = load_checkpoint(tmp_path / "run" / "last.npz")["trainer"]
    if sig == "SIGTERM":
        assert r.returncode == 143, r.stderr
        assert ("interrupted (SIGTERM): saved a resumable checkpoint at epoch 2, iteration 15; "
                "continue with: minis2s lm train --resume run") in r.stderr
        assert (state["epoch"], state["iteration"], state["iteration_in_epoch"]) == (2, 15, 3)
    else:
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert (state["epoch"], state["iteration"], state["iteration_in_epoch"]) == (1, 12, 0)
    resumed = run(["lm", "train", "--resume", "run", "--epochs", "2", "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _same_checkpoint(ref_dir / "last.npz", tmp_path / "run" / "last.npz")
    _same_weights(ref_dir / "best.npz", tmp_path / "run" / "best.npz")
    assert _log_figures(tmp_path / "run") == _log_figures(ref_dir)
    perplexities = [line for line in resumed.stdout.splitlines() if line.startswith("valid perplexity")]
    assert perplexities == [line for line in ref_out.splitlines() if line.startswith("valid perplexity")]


def test_lm_train_writes_its_description_before_the_first_checkpoint(tmp_path, corpus, lm_reference):
    args = [*lm_args(corpus), "--epochs", "2", "--out", "run"]
    r = run_patched(signal_at_step(3, "SIGKILL", "lm"), args, tmp_path)
    assert r.returncode == -signal.SIGKILL
    run_dir = tmp_path / "run"
    assert {"config.json", "vocab.json"} <= set(_files(run_dir))
    assert not (run_dir / "last.npz").exists() and not (run_dir / "best.npz").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["kind"] == "lm-lstm" and config["model"]["hidden_size"] == 16
    resumed = run(["lm", "train", "--resume", "run", "--quiet"], tmp_path)
    assert resumed.returncode == 2
    assert "run/last.npz: checkpoint not found" in _one_error_line(resumed.stderr)
    again = run(args, tmp_path)                   # the same command starts over, cleanly
    assert again.returncode == 0, again.stderr
    _same_checkpoint(lm_reference[0] / "last.npz", run_dir / "last.npz")


def test_lm_resume_refuses_options_it_would_ignore(tmp_path, runs_of_each_kind):
    shutil.copytree(runs_of_each_kind / "lm-lstm", tmp_path / "d")
    r = run(["lm", "train", "--resume", "d", "--hidden-size", "64"], tmp_path)
    assert r.returncode == 2
    assert "only --epochs, --quiet, --threads, --max-memory and --reference can be given, not --hidden-size" in _one_error_line(r.stderr)


def test_lm_resume_refuses_a_checkpoint_without_a_trainer_state(tmp_path, runs_of_each_kind):
    """LSTM runs written before lm train could resume saved only ``{"epoch": E}``."""
    import numpy as np
    d = tmp_path / "d"
    shutil.copytree(runs_of_each_kind / "lm-lstm", d)
    with np.load(d / "last.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["json/meta"].tobytes().decode("utf-8"))
    meta["trainer"] = {"epoch": 1}
    arrays["json/meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(d / "last.npz", **arrays)
    before = _files(d)
    r = run(["lm", "train", "--resume", "d", "--epochs", "2"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert ("d/last.npz: the trainer state lacks iteration, iteration_in_epoch, best, bad_epochs, "
            "skipped, lr, epoch_sums, dropout_generator; not a checkpoint training can continue "
            "from" in _one_error_line(r.stderr))
    assert _files(d) == before


@pytest.mark.parametrize("lr,expected", [
    # Whether the overflow ends as a NaN loss or a huge finite one depends on the BLAS kernel;
    # the guard names the overflow and stops at the same step either way.
    ("1e30", ["floating-point overflow", "in the forward pass", "at epoch 1, iteration 2;"]),
    ("inf", ["minis2s: error: a parameter became non-finite in the update (embedding.weight",
             "at epoch 1, iteration 1;"]),
])
def test_lm_train_with_a_diverging_learning_rate_stops_with_exit_1(tmp_path, corpus, lr, expected):
    r = run([*lm_args(corpus), "--epochs", "1", "--lr", lr, "--out", "run"], tmp_path)
    assert r.returncode == 1, r.stderr
    line = _one_error_line(r.stderr)
    for part in expected:
        assert part in line, (part, line)
    assert "no checkpoint had been saved yet (try a lower --lr)" in line
    assert not (tmp_path / "run").exists()          # nothing left behind


def test_lm_train_divergence_keeps_the_last_good_checkpoint(in_process, tmp_path, corpus, monkeypatch,
                                                            capsys):
    import minis2s.lm.lstm_lm as lstm_lm
    assert in_process([*lm_args(corpus), "--epochs", "1", "--out", "run"]) == 0
    last = tmp_path / "run" / "last.npz"
    before = last.read_bytes()
    real_loss, calls = lstm_lm.LSTMLanguageModel.loss, {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        out = real_loss(self, *args, **kwargs)
        return out * float("nan") if calls["n"] == 3 else out
    monkeypatch.setattr(lstm_lm.LSTMLanguageModel, "loss", poisoned)
    capsys.readouterr()
    assert in_process(["lm", "train", "--resume", "run", "--epochs", "2"]) == 1
    err = capsys.readouterr().err
    assert ("minis2s: error: the loss became nan at epoch 2, iteration 15; the last good checkpoint "
            "in run is untouched (try a lower --lr)") in err
    assert last.read_bytes() == before


# ----------------------------------------------------------------------------- never mix
def test_a_kill_between_the_first_log_line_and_last_npz_is_resumed_not_mixed(
        in_process, tmp_path, monkeypatch, capsys, tiny_reference):
    """The kill leaves best.npz and epoch 1's log line but no last.npz. A new train there is
    refused (it would overwrite best.npz and append to the log); --resume continues from
    best.npz, which holds the same state last.npz would, and writes no duplicate line."""
    from minis2s import checkpoint as ck
    real_write = ck.atomic_write

    def dies_before_the_first_last_npz(path, *args, **kwargs):
        if os.path.basename(path) == "last.npz":
            raise _Killed
        real_write(path, *args, **kwargs)
    monkeypatch.setattr(ck, "atomic_write", dies_before_the_first_last_npz)
    args = ["train", *TINY, "--epochs", "2", "--out", "run"]
    with pytest.raises(_Killed):
        in_process(args)
    monkeypatch.setattr(ck, "atomic_write", real_write)
    run_dir = tmp_path / "run"
    assert (run_dir / "best.npz").exists() and not (run_dir / "last.npz").exists()
    assert _epochs_in_log(run_dir) == [1]
    before = _files(run_dir)
    capsys.readouterr()
    assert in_process(args) == 2
    assert "run already holds a run; continue it with --resume run" in capsys.readouterr().err
    assert _files(run_dir) == before
    assert in_process(["train", "--resume", "run", "--epochs", "2", "--quiet"]) == 0
    assert _epochs_in_log(run_dir) == [1, 2]
    _same_checkpoint(tiny_reference[0] / "last.npz", run_dir / "last.npz")


@pytest.mark.parametrize("kind", ["seq2seq", "lm-lstm", "lm-ngram"])
def test_a_foreign_config_json_is_never_overwritten(tmp_path, corpus, kind):
    d = tmp_path / "d"
    d.mkdir()
    (d / "config.json").write_text('{"name": "my web app", "port": 8080}\n')
    (d / "notes.txt").write_text("mine\n")
    r = run(new_run(kind, "d", corpus), tmp_path)
    assert r.returncode == 2, r.stderr
    assert ("d/config.json is not the config of a minis2s run; "
            f"minis2s {'train' if kind == 'seq2seq' else 'lm train'} will not overwrite it"
            in _one_error_line(r.stderr))
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "notes.txt"]      # no .lock
    assert (d / "config.json").read_text() == '{"name": "my web app", "port": 8080}\n'


def test_minis2s_data_never_overwrites_tsv_files(tmp_path):
    assert run(["data", "--task", "numbers-ko", "--out", "d"], tmp_path).returncode == 0
    (tmp_path / "d" / "valid.tsv").write_text("mine\tkept\n", encoding="utf-8")
    before = _files(tmp_path / "d")
    r = run(["data", "--task", "numbers-ko", "--out", "d"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert ("d/train.tsv already exists; minis2s data does not overwrite files: choose another "
            "--out or remove it") in _one_error_line(r.stderr)
    assert _files(tmp_path / "d") == before


# ----------------------------------------------------------------------------- leave nothing
BAD_RUNS = {
    "train_missing_file": (["train", "--train", "missing.tsv", "--valid", "v.tsv", "--quiet"],
                           "missing.tsv: file not found"),
    "train_bad_data": (["train", "--train", "bad.tsv", "--valid", "v.tsv", "--quiet"],
                       "bad.tsv:2: no tab"),
    "lm_missing_corpus": (["lm", "train", "--corpus", "missing.txt"], "missing.txt: file not found"),
    "lm_ngram_bad_bytes": (["lm", "train", "--corpus", "bad.txt", "--model", "ngram"],
                           "bad.txt:3: not valid UTF-8"),
}


@pytest.mark.parametrize("case,out", [(case, "new/run") for case in sorted(BAD_RUNS)]
                         + [("train_missing_file", "empty"), ("train_bad_data", "empty")])
def test_a_failed_run_leaves_nothing_behind(tmp_path, case, out):
    """``new/run``: no directory is left; ``empty`` (a directory that existed): left empty."""
    (tmp_path / "v.tsv").write_text("a\tb\n", encoding="utf-8")
    (tmp_path / "bad.tsv").write_text("a\tb\nno tab here\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"a b\nc d\n\xff e\n" + b"f g\n" * 10)
    (tmp_path / "empty").mkdir()
    args, expected = BAD_RUNS[case]
    r = run([*args, "--out", out], tmp_path)
    assert r.returncode == 2, r.stderr
    assert expected in _one_error_line(r.stderr)
    if out == "empty":
        assert list((tmp_path / "empty").iterdir()) == []          # no .lock either
    else:
        assert not (tmp_path / "new").exists()                       # nor the directories


@pytest.mark.parametrize("how", ["diverged", "sigterm_while_reading_data"])
def test_a_run_stopped_before_its_first_checkpoint_leaves_nothing_behind(tmp_path, how):
    args = ["train", *TINY, "--epochs", "1", "--out", "new/run"]
    if how == "diverged":
        r = run([*args, "--optimizer", "sgd", "--lr", "inf"], tmp_path)
        assert r.returncode == 1, r.stderr
        assert "no checkpoint had been saved yet" in _one_error_line(r.stderr)
    else:
        patch = """
            import minis2s.train as train
            _real = train.prepare_data
            def _prepare(*a, **k):
                os.kill(os.getpid(), signal.SIGTERM)
                return _real(*a, **k)
            train.prepare_data = _prepare
            """
        r = run_patched(patch, args, tmp_path)
        assert r.returncode == 143, r.stderr
        assert r.stderr.strip() == "minis2s: interrupted (SIGTERM)"
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- translate
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
TRANSLATE = ["translate", "--beam-size", "1", "--max-output-length", "12"]


def _dates(n):
    return [f"{1 + i % 28} {MONTHS[i % 12]} {1950 + i % 97}" for i in range(n)]


def _translated(model, lines, cwd):
    """The translations of ``lines`` by an uninterrupted ``minis2s translate``."""
    r = run([*TRANSLATE, "--model", str(model)], cwd, input="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def _ctrl_c_as_in_a_terminal():
    """In the child, before it runs: SIGINT back to its default action. A test runner started in
    the background (``cmd &`` in a script) hands its children SIGINT ignored, as shells do for
    background jobs, and Python then installs no KeyboardInterrupt handler; a command typed in a
    terminal, which these tests stand for, has the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_translate_answers_each_batch_before_reading_the_rest_of_the_input(runs_of_each_kind, tmp_path):
    """Standard input stays open after 2 batches and 2 lines: the 128 lines of the 2 batches are
    written while translate waits for more input; Ctrl-C then keeps them."""
    model, lines = runs_of_each_kind / "seq2seq", _dates(130)
    out = tmp_path / "stdout.txt"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "minis2s", *TRANSLATE, "--model", str(model)],
                                cwd=tmp_path, env=env(), stdin=subprocess.PIPE, stdout=stdout,
                                stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal)
        try:
            proc.stdin.write("\n".join(lines) + "\n")
            proc.stdin.flush()                        # ... and no EOF
            answered = wait_for(lambda: len(out.read_text().splitlines()) == 128, timeout=120)
            time.sleep(0.2)
            waiting = proc.poll() is None
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert answered, "nothing was written before the end of the input"
    assert waiting and proc.returncode == 130, err
    assert err.strip().endswith("minis2s: interrupted")
    assert out.read_text().splitlines() == _translated(model, lines, tmp_path)[:128]


def test_translate_writes_as_it_goes_and_ctrl_c_keeps_the_finished_lines(runs_of_each_kind, tmp_path):
    model, n = runs_of_each_kind / "seq2seq", 64 * 1000     # seconds of work, interrupted early
    lines = _dates(n)
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    proc = subprocess.Popen([sys.executable, "-m", "minis2s", *TRANSLATE, "--model", str(model),
                             "--input", "in.txt", "--output", "out.txt"], cwd=tmp_path, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_as_in_a_terminal)
    try:
        assert wait_for(lambda: out.exists() and out.stat().st_size > 0, timeout=120)
        time.sleep(0.5)
        still_translating = proc.poll() is None       # lines written while translation goes on
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert still_translating, "the output appeared only when the translation was done"
    assert proc.returncode == 130, err
    assert err.strip().endswith("minis2s: interrupted")
    text = out.read_text(encoding="utf-8")
    got = text.splitlines()
    assert 0 < len(got) < n and text.endswith("\n")                  # whole lines only
    # The same lines in the same batches of 64 (those the finished lines came from), translated
    # without interruption: the same translations, in input order.
    k = -(-len(got) // 64) * 64
    assert got == _translated(model, lines[:k], tmp_path)[:len(got)]
