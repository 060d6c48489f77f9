"""Reliability: interruptions, locks, bad data files and damaged model directories, each run the
way a user meets them (a real ``minis2s`` subprocess)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minis2s.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--task", "dates", "--n-train", "1500", "--n-valid", "40", "--n-test", "40",
         "--emb-size", "16", "--hidden-size", "32", "--batch-size", "16", "--quiet", "--seed", "3"]


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


def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint_and_resume_works(tmp_path):
    for delay in (0.2, 0.9, 1.7):
        run_dir = tmp_path / f"run{delay}"
        proc = start(["train", *SMALL, "--epochs", "3", "--out", run_dir.name], tmp_path)
        assert wait_for(lambda: (run_dir / "last.npz").exists())
        time.sleep(delay)
        proc.kill()
        proc.communicate()
        load_checkpoint(run_dir / "last.npz")                      # complete, never half-written
        leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
        resumed = run(["train", "--resume", run_dir.name, "--epochs", "3", "--quiet"], tmp_path)
        assert resumed.returncode == 0, (resumed.stderr, leftovers)   # the lock died with the process
        assert "model saved in" in resumed.stdout


def test_a_second_train_into_a_directory_in_use_is_refused(tmp_path):
    proc = start(["train", *SMALL, "--epochs", "3", "--out", "run"], tmp_path)
    try:
        assert wait_for(lambda: (tmp_path / "run" / ".lock").exists())
        time.sleep(0.2)
        second = run(["train", "--resume", "run", "--epochs", "3", "--quiet"], tmp_path)
        assert second.returncode == 2
        assert "in use by another minis2s process" in second.stderr
    finally:
        proc.kill()
        proc.communicate()


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


@pytest.mark.parametrize("damage,expected", [
    (lambda p: (p / "best.npz").unlink() or (p / "last.npz").unlink(), "last.npz: checkpoint not found"),
    (lambda p: (p / "config.json").unlink(), "config.json: file not found"),
    (_truncate, "best.npz"),
    (_wrong_vocab, "tgt_vocab.json"),
    (_wrong_version, "format version 999"),
    (_wrong_shapes, "weights do not match the config"),
])
def test_damaged_model_directories_are_refused_with_a_clear_message(model_dir, tmp_path, damage, expected):
    broken = _broken_copy(model_dir, tmp_path, damage)
    r = run(["translate", "--model", str(broken)], tmp_path, input="1 Jan 2000\n")
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr and "Traceback" not in r.stderr


def test_translate_time_input_empty_lines_unknown_tokens_long_input_any_unicode(model_dir, tmp_path):
    text = "1 Jan 2000\n\n§¶ 日本 🙂 2000\n" + "9" * 500 + "\n"
    r = run(["translate", "--model", str(model_dir), "--beam-size", "2"], tmp_path, input=text)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 4                            # one output per input line
    assert "mapped to <unk>" in r.stderr
    assert "truncated" in r.stderr
