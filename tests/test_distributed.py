"""Data-parallel training over MPI (minis2s/distributed.py, grad/flat.py).

Two kinds of tests:

* plain ones (the flat buffer, launch detection, sharding, the error without mpi4py, thread
  shares) run in the default suite;
* tests marked ``mpi`` run ``mpiexec -n 2`` in subprocesses. They run only alone, as
  ``python -m pytest -m mpi -n 0`` (tests/conftest.py says why), and are skipped where mpi4py or
  mpiexec is missing (``pip install ".[mpi]"``).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from grad import backend as B
from grad.flat import FlatLayout
from helpers import backends
from minis2s import distributed
from minis2s.distributed import detect_launch, is_parallel_launch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "mpi"


# =============================================================================== flat buffer
@backends
def test_flat_gather_scatter_round_trip(backend):
    with B.use(backend):
        xp = B.xp
        arrays = [B.asarray(np.arange(12, dtype=np.float32).reshape(4, 3)),
                  None,
                  B.asarray(np.full((2, 1, 2), -1.5, dtype=np.float32))]
        layout = FlatLayout([(4, 3), (5,), (2, 1, 2)], arrays[0].dtype)
        assert (layout.offsets, layout.total) == ([0, 12, 17], 21)
        buf = layout.gather(arrays)
        assert tuple(buf.shape) == (21,)
        host = B.to_numpy(buf)
        np.testing.assert_array_equal(host[:12], np.arange(12))
        np.testing.assert_array_equal(host[12:17], 0.0)          # None -> zeros
        np.testing.assert_array_equal(host[17:], -1.5)
        back = layout.scatter(buf)
        assert [tuple(a.shape) for a in back] == [(4, 3), (5,), (2, 1, 2)]
        np.testing.assert_array_equal(B.to_numpy(back[0]), B.to_numpy(arrays[0]))
        np.testing.assert_array_equal(B.to_numpy(back[2]), B.to_numpy(arrays[2]))
        assert xp.sum(back[1]) == 0


def test_flat_scatter_gives_views_on_numpy():
    """On NumPy the pieces are views of the buffer: the transport writes the buffer once and
    every parameter sees its sum without a copy."""
    layout = FlatLayout([(2, 2), (3,)], np.dtype(np.float64))
    buf = layout.gather([np.ones((2, 2)), np.ones(3)])
    pieces = layout.scatter(buf)
    buf *= 3
    assert pieces[0][1, 1] == 3.0 and pieces[1][2] == 3.0


def test_flat_refuses_mixed_dtypes_and_wrong_shapes():
    with pytest.raises(ValueError, match="one dtype"):
        FlatLayout.of([np.ones(2, np.float32), np.ones(2, np.float64)])
    layout = FlatLayout([(2, 2)], np.dtype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        layout.gather([np.ones((4,), np.float32)])
    with pytest.raises(ValueError, match="buffer has shape"):
        layout.scatter(np.ones(5, np.float32))


# =============================================================================== launch
@pytest.mark.parametrize("env, launcher, rank, size", [
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALNRANKS": "2"}, "mpiexec (hydra)", 1, 2),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3"}, "Open MPI", 3, 4),
    ({"PMIX_RANK": "0"}, "PMIx", 0, None),
    ({"SLURM_PROCID": "2", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "3"}, "srun", 2, 3),
])
def test_launch_detected_from_the_launchers_environment(env, launcher, rank, size):
    launch = detect_launch(env)
    assert (launch.launcher, launch.rank, launch.size) == (launcher, rank, size)
    assert is_parallel_launch(launch)


def test_no_launch_one_rank_and_a_slurm_batch_script_are_plain_runs():
    assert detect_launch({"HOME": "/x"}) is None
    assert not is_parallel_launch(detect_launch({"PMI_RANK": "0", "PMI_SIZE": "1"}))
    # the batch script of an sbatch job has SLURM_PROCID but is not a job step (srun)
    assert detect_launch({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}) is None


def test_launched_without_mpi4py_is_one_line_naming_the_extra(monkeypatch, capsys):
    from minis2s.cli import main
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)          # import mpi4py -> ImportError
    assert main(["train", "--task", "dates", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "mpi4py is not installed" in err and 'minis2s[mpi]' in err and "PMI_SIZE=2" in err


def test_a_command_that_is_not_data_parallel_is_refused_under_a_launcher(monkeypatch, capsys):
    from minis2s.cli import main
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert main(["tasks"]) == 2
    assert "does not run data-parallel" in capsys.readouterr().err


class _FakeComm(distributed.Communicator):
    def __init__(self, rank, size):          # no MPI: only the arithmetic of sharding
        self.rank, self.size = rank, size


@pytest.mark.parametrize("n, size", [(64, 2), (7, 2), (1, 2), (5, 4), (3, 4), (10, 3)])
def test_shards_cover_the_global_batch_in_order(n, size):
    rows = list(range(n))
    shards = [_FakeComm(r, size).shard(rows) for r in range(size)]
    assert sum(shards, []) == rows                    # contiguous, in order, each row once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    if n < size:
        assert shards[-1] == []                       # an empty shard still exists


def test_blas_threads_per_rank_are_the_cores_share(monkeypatch):
    from minis2s import threads
    monkeypatch.setattr(threads, "allowed_cores", lambda: 8)
    assert threads.choose_threads("auto", 512, local_ranks=2) == (4, "auto: 8 cores / 2 ranks on this node")
    assert threads.choose_threads("auto", 512, local_ranks=16)[0] == 1
    assert threads.choose_threads(3, 512, local_ranks=2) == (3, "--threads")       # overridable


def test_blas_variables_are_set_before_numpy_loads_only_under_a_parallel_launch(monkeypatch):
    from minis2s import threads
    monkeypatch.setattr(threads, "allowed_cores", lambda: 8)
    env = {"PMI_RANK": "0", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "4", "MKL_NUM_THREADS": "3"}
    distributed.limit_blas_before_numpy(env)
    assert env["OPENBLAS_NUM_THREADS"] == "2" and env["OMP_NUM_THREADS"] == "2"
    assert env["MKL_NUM_THREADS"] == "3"                   # the user's own setting is kept
    plain = {"HOME": "/x"}
    distributed.limit_blas_before_numpy(plain)
    assert plain == {"HOME": "/x"}


# =============================================================================== under mpiexec
def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def _needs_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip('mpi4py not installed (pip install ".[mpi]")')
    if _mpiexec() is None:
        pytest.skip('no mpiexec found (pip install ".[mpi]" installs MPICH\'s)')


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "PMIX_", "SLURM_", "MPI_LOCAL"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _run(args, cwd, ranks=None, timeout=120, **extra):
    cmd = ([_mpiexec(), "-n", str(ranks)] if ranks else []) + [sys.executable, *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(**extra), capture_output=True, text=True,
                          timeout=timeout)


def _train(cwd, out, *opts, ranks=None, timeout=120):
    return _run(["-m", "minis2s", "train", "--out", str(out), "--quiet", *opts], cwd,
                ranks=ranks, timeout=timeout)


TINY = ["--task", "dates", "--n-valid", "40", "--n-test", "40", "--emb-size", "8",
        "--hidden-size", "16", "--dropout", "0"]


def _params(path):
    from minis2s.checkpoint import load_checkpoint
    return {k: B.to_numpy(v) for k, v in load_checkpoint(path)["model"].items()}


def _assert_close_f32(a, b):
    """|a - b| <= 1e-5 + 1e-4 |a|: only the order of the sums may differ."""
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.mpi
def test_two_ranks_equal_one_process_in_float64(tmp_path):
    """30 Adam steps from Python in float64 (every 5th global batch of one sentence, so rank 1's
    shard is empty): the parameters agree to 1e-9."""
    _needs_mpi()
    script = str(SCRIPTS / "equality.py")
    one = _run([script, str(tmp_path / "one.npz")], tmp_path)
    two = _run([script, str(tmp_path / "two.npz")], tmp_path, ranks=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert "30 steps on 2 process(es)" in two.stdout
    assert "in-place Allreduce over the flat gradient buffer: True" in two.stdout
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert float(a["_moved"]) > 1e-2                      # the steps did change the weights
    for k in a.files:
        assert a[k].dtype == np.float64
        assert np.abs(a[k] - b[k]).max() <= 1e-9, k


@pytest.mark.mpi
def test_cli_two_ranks_equal_one_process_in_float32(tmp_path):
    """``mpiexec -n 2 minis2s train`` against ``minis2s train``: 30 Adam steps (global batch 16),
    parameters within 1e-5 + 1e-4 |w|, the printed epoch line the same."""
    _needs_mpi()
    opts = [*TINY, "--n-train", "480", "--batch-size", "16", "--epochs", "1"]
    one = _train(tmp_path, tmp_path / "one", *opts)
    two = _train(tmp_path, tmp_path / "two", *opts, ranks=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert "data-parallel over MPI: 2 ranks (MPICH" in two.stdout
    assert "global batch 16 = 2 x 8, 1 BLAS thread per rank" in two.stdout
    def epochs(out):                         # the metrics, without the seconds taken
        return [re.sub(r"\(\d+s\)", "", x) for x in out.splitlines() if x.startswith("epoch")]
    assert epochs(one.stdout) and epochs(one.stdout) == epochs(two.stdout)
    record = json.loads((tmp_path / "two" / "log.jsonl").read_text())
    assert (record["iteration"], record["ranks"], record["blas_threads"]) == (30, 2, 1)
    a, b = _params(tmp_path / "one" / "last.npz"), _params(tmp_path / "two" / "last.npz")
    _assert_close_f32(a, b)


@pytest.mark.mpi
def test_cli_two_ranks_equal_one_process_in_float64(tmp_path):
    """``--dtype float64`` through the CLI: 30 Adam steps, the parameters agree to 1e-9."""
    _needs_mpi()
    opts = [*TINY, "--n-train", "480", "--batch-size", "16", "--epochs", "1", "--dtype", "float64"]
    one = _train(tmp_path, tmp_path / "one", *opts)
    two = _train(tmp_path, tmp_path / "two", *opts, ranks=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = _params(tmp_path / "one" / "last.npz"), _params(tmp_path / "two" / "last.npz")
    for k in a:
        assert a[k].dtype == np.float64 and np.abs(a[k] - b[k]).max() <= 1e-9, k


@pytest.mark.mpi
def test_mpiexec_with_one_rank_is_a_plain_run(tmp_path):
    _needs_mpi()
    out = _train(tmp_path, tmp_path / "run", *TINY, "--n-train", "32", "--epochs", "1", ranks=1)
    assert out.returncode == 0, out.stderr
    assert "data-parallel" not in out.stdout
    assert "ranks" not in json.loads((tmp_path / "run" / "log.jsonl").read_text())


@pytest.mark.mpi
def test_cli_lm_two_ranks_equal_one_process_in_float32(tmp_path):
    """``mpiexec -n 2 minis2s lm train``: the LSTM language model trains the same as one process."""
    _needs_mpi()
    opts = ["lm", "train", "--builtin", "markov", "--epochs", "1", "--emb-size", "8",
            "--hidden-size", "16", "--dropout", "0", "--quiet"]
    one = _run(["-m", "minis2s", *opts, "--out", str(tmp_path / "one")], tmp_path)
    two = _run(["-m", "minis2s", *opts, "--out", str(tmp_path / "two")], tmp_path, ranks=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert "data-parallel over MPI: 2 ranks" in two.stdout
    perplexities = [x for x in one.stdout.splitlines() if x.startswith("valid perplexity")]
    assert perplexities and perplexities == [x for x in two.stdout.splitlines()
                                             if x.startswith("valid perplexity")]
    _assert_close_f32(_params(tmp_path / "one" / "last.npz"), _params(tmp_path / "two" / "last.npz"))


CHECKSUM = """
import os
import sys
sys.path.insert(0, {root!r})
import numpy as np
import grad
from grad import backend as B
from minis2s import distributed
comm = distributed.init()
model = grad.nn.Linear(3, 2, generator=grad.Generator(comm.rank))   # different on each rank
comm.broadcast_parameters(model.parameters())                      # now rank 0's everywhere
w, b = model.weight, model.bias
assert np.array_equal(B.to_numpy(w.data), B.to_numpy(grad.nn.Linear(3, 2, generator=grad.Generator(0)).weight.data))
# sum_gradients: w has a gradient on both ranks, b only on rank 1 (rank 0's counts as zero)
w.grad = B.asarray(np.full((2, 3), comm.rank + 1.0, dtype=np.float32))
b.grad = B.asarray(np.array([5.0, 7.0], dtype=np.float32)) if comm.rank == 1 else None
comm.sum_gradients([w, b])
assert np.array_equal(B.to_numpy(w.grad), np.full((2, 3), 3.0)), B.to_numpy(w.grad)
assert np.array_equal(B.to_numpy(b.grad), [5.0, 7.0]), b.grad
w.grad, b.grad = None, None                                          # on every rank: stays None
comm.sum_gradients([w, b])
assert w.grad is None and b.grad is None
assert comm.sum_count(comm.rank + 2) == 5 and comm.sum_values([0.25, comm.rank]) == [0.5, 1.0]
comm.check_parameters(model.parameters(), "the start")            # equal: passes
if comm.rank == 1:
    w = model.weight
    w.data = w.data + 1e-7                                          # a rank drifts
try:
    comm.check_parameters(model.parameters(), "iteration 100")
except distributed.RanksDiverged as exc:
    os.write(1, f"rank {{comm.rank}} stopped: {{exc}}\\n".encode())     # one write: lines stay whole
    sys.exit(0)
os.write(1, f"rank {{comm.rank}} did not notice\\n".encode())
sys.exit(1)
"""


@pytest.mark.mpi
def test_collectives_and_a_checksum_difference_stops_every_rank(tmp_path):
    """broadcast, sum_gradients (a missing gradient counts as zero; missing everywhere stays
    None), the small sums; then a parameter that drifts on one rank stops both at the check."""
    _needs_mpi()
    script = tmp_path / "checksum.py"
    script.write_text(CHECKSUM.format(root=str(ROOT)))
    out = _run([str(script)], tmp_path, ranks=2, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = sorted(out.stdout.splitlines())
    assert len(lines) == 2 and all("the ranks' parameters differ at iteration 100" in x for x in lines)
    assert lines[0].startswith("rank 0 stopped") and lines[1].startswith("rank 1 stopped")


def _rank_pid(tag: str, rank: int) -> int | None:
    """The pid of the process launched with MINIS2S_TEST_TAG=tag and PMI_RANK=rank."""
    want = {f"MINIS2S_TEST_TAG={tag}".encode(), f"PMI_RANK={rank}".encode()}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = set(Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if want <= env:                # only the rank itself has PMI_RANK (not mpiexec, the proxy)
            return int(entry)
    return None


def _wait_for(path: Path, proc, limit: float):
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {path} appeared:\n"
                                 + proc.stderr.read())
        if time.time() - t0 > limit:
            raise AssertionError(f"{path} did not appear within {limit} s")
        time.sleep(0.1)


@pytest.mark.mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find a rank's pid")
def test_kill_9_of_one_rank_ends_the_job_and_the_run_resumes_on_another_rank_count(tmp_path):
    """``kill -9`` of rank 1 mid-epoch: the job ends non-zero within 60 s, ``last.npz`` is intact
    and loadable, and ``--resume`` continues -- on 1 process, from a 2-rank run."""
    _needs_mpi()
    tag = uuid.uuid4().hex
    out = tmp_path / "run"
    opts = [*TINY, "--n-train", "1500", "--batch-size", "16", "--epochs", "30"]
    proc = subprocess.Popen([_mpiexec(), "-n", "2", sys.executable, "-m", "minis2s", "train",
                             "--out", str(out), "--quiet", *opts], cwd=tmp_path,
                            env=_env(MINIS2S_TEST_TAG=tag), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / "last.npz", proc, 90)          # epoch 1 is saved; epoch 2 has begun
        time.sleep(0.5)
        pid = _rank_pid(tag, 1)
        assert pid is not None, "rank 1 not found"
        os.kill(pid, signal.SIGKILL)
        t0 = time.time()
        rc = proc.wait(timeout=60)
        assert time.time() - t0 < 60 and rc != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    from minis2s.checkpoint import load_checkpoint
    state = load_checkpoint(out / "last.npz")["trainer"]
    reached = state["epoch"]
    assert reached >= 1 and state["iteration_in_epoch"] == 0          # an end-of-epoch checkpoint
    resumed = _run(["-m", "minis2s", "train", "--resume", str(out), "--epochs", str(reached + 1),
                    "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at epoch {reached}" in resumed.stdout
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, reached + 2))


@pytest.mark.mpi
def test_resume_across_rank_counts_and_bit_exact_on_the_same_count(tmp_path):
    """Two ranks for 2 epochs = two ranks for 1 epoch resumed on two ranks, bit for bit; resumed
    on one process or on four ranks, within the float32 tolerance of a single process throughout."""
    _needs_mpi()
    opts = [*TINY, "--n-train", "240", "--batch-size", "16"]
    straight = _train(tmp_path, tmp_path / "straight", *opts, "--epochs", "2", ranks=2)
    assert straight.returncode == 0, straight.stderr
    single = _train(tmp_path, tmp_path / "single", *opts, "--epochs", "2")
    assert single.returncode == 0, single.stderr
    for name, ranks in (("same", 2), ("fewer", None), ("more", 4)):
        first = _train(tmp_path, tmp_path / name, *opts, "--epochs", "1", ranks=2)
        assert first.returncode == 0, first.stderr
        again = _run(["-m", "minis2s", "train", "--resume", str(tmp_path / name), "--epochs", "2",
                      "--quiet"], tmp_path, ranks=ranks)
        assert again.returncode == 0, again.stderr
    want = _params(tmp_path / "straight" / "last.npz")
    got = _params(tmp_path / "same" / "last.npz")
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    for name in ("fewer", "more"):
        _assert_close_f32(_params(tmp_path / "single" / "last.npz"), _params(tmp_path / name / "last.npz"))


@pytest.mark.mpi
def test_sigterm_to_mpiexec_saves_a_resumable_checkpoint(tmp_path):
    """MPICH's mpiexec forwards SIGTERM to every rank and waits for them (docs/distributed.md):
    the ranks agree to stop at one step, rank 0 saves, all exit 143, and --resume continues."""
    _needs_mpi()
    out = tmp_path / "run"
    opts = [*TINY, "--n-train", "1500", "--batch-size", "16", "--epochs", "30"]
    proc = subprocess.Popen([_mpiexec(), "-n", "2", sys.executable, "-m", "minis2s", "train",
                             "--out", str(out), "--quiet", *opts], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / "last.npz", proc, 90)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert rc == 143, err
    assert "saved a resumable checkpoint" in err and err.count("minis2s: interrupted") == 1
    from minis2s.checkpoint import load_checkpoint
    state = load_checkpoint(out / "last.npz")["trainer"]
    assert state["iteration_in_epoch"] > 0                 # a mid-epoch checkpoint
    resumed = _run(["-m", "minis2s", "train", "--resume", str(out), "--epochs", str(state["epoch"]),
                    "--quiet"], tmp_path, ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    assert f"iteration {state['iteration']}" in resumed.stdout


@pytest.mark.mpi
def test_a_nan_loss_on_one_rank_stops_every_rank_with_the_same_message(tmp_path):
    _needs_mpi()
    out = _run([str(SCRIPTS / "faults.py"), "nan"], tmp_path, ranks=2, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = sorted(out.stdout.splitlines())
    assert [x.split(":")[0] for x in lines] == ["rank 0", "rank 1"]
    assert lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]
    assert "the loss became nan at epoch 1, iteration 3" in lines[0]


@pytest.mark.mpi
@pytest.mark.parametrize("mode, code, said", [
    ("data", 2, "[rank 1] minis2s: error: injected: rank 1 cannot read its data"),
    ("bug", 1, "[rank 1] RuntimeError: injected: rank 1 cannot read its data")])
def test_a_failure_on_one_rank_alone_ends_the_job_instead_of_hanging(tmp_path, mode, code, said):
    _needs_mpi()
    t0 = time.time()
    out = _run([str(SCRIPTS / "faults.py"), mode, str(tmp_path / "run")], tmp_path, ranks=2,
               timeout=120)
    assert time.time() - t0 < 60                  # (about 7 s: the failing rank waits 5 s first)
    assert out.returncode == code, out.stdout + out.stderr
    assert said in out.stderr
    assert not (tmp_path / "run" / "last.npz").exists()


@pytest.mark.mpi
def test_data_parallel_benchmark_runs_on_tiny(tmp_path):
    """benchmarks/data_parallel.py on the tiny configuration, two steps: it runs both sides and
    prints the table (its figures are measured on a quiet machine, docs/distributed.md)."""
    _needs_mpi()
    out = _run([str(ROOT / "benchmarks" / "data_parallel.py"), "--config", "tiny", "--steps", "2",
                "--warmup", "1", "--json", str(tmp_path / "dp.json")], tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| tiny |" in out.stdout and "allreduce ms" in out.stdout
    (row,) = json.loads((tmp_path / "dp.json").read_text())
    assert (row["one"]["ranks"], row["two"]["ranks"]) == (1, 2)
    assert (row["one"]["blas_threads"], row["two"]["blas_threads"]) == (2, 1)
    assert row["two"]["allreduce_s"] > 0
    assert row["two"]["ring_bytes_per_rank"] == row["two"]["buffer_bytes"]   # 2 (N-1)/N = 1
