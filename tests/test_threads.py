"""``--threads N|auto``: the BLAS thread count is chosen, set through threadpoolctl, printed and
logged (minis2s/threads.py)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minis2s import threads

pytest.importorskip("threadpoolctl", reason="threadpoolctl is a dependency of minis2s; not installed here")

REPO = Path(__file__).resolve().parents[1]
TINY = ["train", "--task", "dates", "--n-train", "100", "--n-valid", "20", "--n-test", "20",
        "--emb-size", "8", "--hidden-size", "16", "--batch-size", "32", "--epochs", "1", "--quiet"]


def run(args, cwd, blas_env):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS=blas_env, OMP_NUM_THREADS=blas_env)
    return subprocess.run([sys.executable, "-m", "minis2s", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.parametrize("requested, blas_env", [(1, "2"), (2, "1")])
def test_threads_n_is_what_the_blas_reports_inside_the_running_command(tmp_path, requested, blas_env):
    # The environment starts the BLAS with the other count; --threads must override it after
    # NumPy has loaded, and the log records what threadpoolctl then reports.
    r = run([*TINY, "--out", "run", "--threads", str(requested)], tmp_path, blas_env)
    assert r.returncode == 0, r.stderr
    word = "thread" if requested == 1 else "threads"
    assert r.stdout.splitlines()[0] == f"{requested} BLAS {word} (--threads)"
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert record["blas_threads"] == requested and record["threads_reason"] == "--threads"


def test_auto_prints_its_choice_and_logs_it(tmp_path):
    r = run([*TINY, "--out", "run"], tmp_path, "2")
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0]
    # hidden size 16 is below threads.SMALL_HIDDEN: one thread whatever the machine's load
    assert header == "1 BLAS thread (auto: hidden size 16 < 64, a second thread gains little)"
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert record["blas_threads"] == 1 and record["threads_reason"].startswith("auto: ")


def test_a_bad_threads_value_is_a_one_line_usage_error(tmp_path):
    r = run([*TINY, "--threads", "0"], tmp_path, "1")
    assert r.returncode == 2
    assert "--threads: expected 'auto' or a positive integer, got '0'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("idle, cores, expected", [(2.0, 2, 2), (1.9, 2, 2), (1.0, 2, 1),
                                                    (0.6, 2, 1), (0.0, 2, 1), (3.8, 4, 4),
                                                    (2.2, 4, 2), (8.0, 4, 4)])
def test_auto_takes_the_idle_cores_at_least_one(monkeypatch, idle, cores, expected):
    monkeypatch.setattr(threads, "idle_cores", lambda window=threads.WINDOW_S: idle)
    monkeypatch.setattr(threads, "allowed_cores", lambda: cores)
    n, reason = threads.choose_threads("auto", hidden_size=256)
    assert n == expected
    assert reason == f"auto: {idle:.1f} of {cores} cores idle"


def test_auto_uses_one_thread_for_small_models_and_a_count_is_taken_as_given(monkeypatch):
    monkeypatch.setattr(threads, "idle_cores", lambda window=threads.WINDOW_S: 2.0)
    monkeypatch.setattr(threads, "allowed_cores", lambda: 2)
    assert threads.choose_threads("auto", hidden_size=threads.SMALL_HIDDEN - 1)[0] == 1
    assert threads.choose_threads("auto", hidden_size=threads.SMALL_HIDDEN)[0] == 2
    assert threads.choose_threads(3, hidden_size=8) == (3, "--threads")


def test_idle_cores_sees_a_busy_process(tmp_path):
    # A busy loop pinned to one of our cores makes that core busy for the whole window.
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 cores to compare a busy core with an idle one")
    quiet = threads.idle_cores(window=0.3)
    busy = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpus[0]}}})\nwhile True: pass"])
    try:
        import time
        time.sleep(0.3)
        loaded = threads.idle_cores(window=0.3)
    finally:
        busy.kill()
        busy.wait()
    # other workers may load the machine too; the busy loop takes about one whole core
    assert loaded <= quiet - 0.5 or loaded <= len(cpus) - 0.8


def test_set_num_threads_changes_the_blas_and_refuses_nonsense():
    from grad import backend
    before = backend.get_num_threads()
    try:
        backend.set_num_threads(1)
        assert backend.get_num_threads() == 1
        assert backend.blas_info() and all(i["num_threads"] == 1 for i in backend.blas_info())
    finally:
        backend.set_num_threads(before or 1)
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="positive integer"):
            backend.set_num_threads(bad)
