"""The benchmark scripts run (on the tiny configuration, a few steps): speed itself is measured by
running them, never asserted in the test suite. Where PyTorch is installed, the scripts' PyTorch
model must compute the same first loss and the same greedy tokens as minis2s from the same
weights, which shows both sides of each comparison run the same model."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def run(script, *args, timeout=240):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_train_step_on_tiny(tmp_path):
    out_json = tmp_path / "tiny.json"
    text = run("train_step.py", "--config", "tiny", "--steps", "2", "--warmup", "1", "--block", "1",
               "--threads", "1", "--json", str(out_json))
    result = json.loads(out_json.read_text())
    ours = result["frameworks"]["minis2s"]
    # Times cannot be pinned, but the summary of two timed steps can: the median of two is
    # their mean, the quartiles lie between them, throughput is tokens over the median.
    for f in result["frameworks"].values():
        assert f["steps"] == 2
        assert 0 < f["min_s"] <= f["p25_s"] <= f["median_s"] <= f["p75_s"] <= f["max_s"]
        assert f["median_s"] == (f["min_s"] + f["max_s"]) / 2
        assert f["tokens_per_s"] == pytest.approx(result["target_tokens_per_step"] / f["median_s"], rel=1e-12)
        # the growth of the resident set over the memory after imports, in MiB: a tiny model
        # (about 7 MiB here) grows it by some, and by far less than 256 MiB
        assert 0 < f["peak_memory_mb"] < 256
    cfg = result["sizes"]
    assert result["target_tokens_per_step"] > cfg["B"]                      # several tokens a row
    assert result["gemm_flops"] == train_step_module().gemm_flops(train_step_module().gemm_shapes(cfg))
    assert result["minis2s_over_floor"] == pytest.approx(ours["median_s"] / result["gemm_floor_s"], rel=1e-12)
    assert "GEMM floor" in text
    if HAVE_TORCH:
        theirs = result["frameworks"]["torch"]
        assert theirs["first_loss"] == pytest.approx(ours["first_loss"], rel=1e-5)
        assert result["ratio_time"] == pytest.approx(ours["median_s"] / theirs["median_s"], rel=1e-12)
        assert result["ratio_memory"] == pytest.approx(ours["peak_memory_mb"] / theirs["peak_memory_mb"], rel=1e-12)
        assert "minis2s / PyTorch" in text


def train_step_module():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import train_step
    finally:
        sys.path.pop(0)
    return train_step


def test_gemm_flop_count_of_medium_matches_the_issue():
    train_step = train_step_module()
    flops = train_step.gemm_flops(train_step.gemm_shapes(train_step.common.CONFIGS["medium"]))
    assert 180e9 < flops < 190e9          # "a medium step has about 188 GFLOP of matrix products"


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed: the Transformer benchmark compares "
                                           "minis2s with PyTorch's own Transformer layers")
def test_train_step_transformer_on_tiny_computes_the_same_first_loss_in_both(tmp_path):
    out_json = tmp_path / "transformer.json"
    text = run("train_step.py", "--arch", "transformer", "--config", "tiny", "--steps", "2",
               "--warmup", "1", "--block", "1", "--threads", "1", "--json", str(out_json))
    result = json.loads(out_json.read_text())
    assert result["arch"] == "transformer" and result["sizes"]["D"] == 32
    ours, theirs = result["frameworks"]["minis2s"], result["frameworks"]["torch"]
    assert ours["steps"] == theirs["steps"] == 2
    # the same weights, batches and loss: the same first loss up to float32 rounding (a random
    # model over V=100 starts near log(100) = 4.6, so a wrong mask or scale would show)
    assert theirs["first_loss"] == pytest.approx(ours["first_loss"], rel=1e-5)
    train_step = train_step_module()
    cfg = result["sizes"]
    assert result["gemm_flops"] == train_step.gemm_flops(train_step.transformer_gemm_shapes(cfg))
    assert result["minis2s_over_floor"] == pytest.approx(ours["median_s"] / result["gemm_floor_s"], rel=1e-12)
    assert result["ratio_time"] == pytest.approx(ours["median_s"] / theirs["median_s"], rel=1e-12)
    assert "transformer config tiny" in text and "minis2s / PyTorch" in text


def test_transformer_gemm_floor_counts_the_documented_products():
    """The shapes add up to the closed form of ``transformer_gemm_shapes``'s docstring: 3x the
    forward matrix products of the base configuration (about 87 GFLOP a step)."""
    train_step = train_step_module()
    cfg = train_step.common.TRANSFORMER_CONFIGS["base"]
    b, s, t, d, f, v, n_layers = (cfg[k] for k in ("B", "S", "T", "D", "F", "V", "L"))
    t -= 1
    n, m = b * s, b * t
    encoder = 2 * n * (4 * d * d + 2 * d * f) + 4 * b * s * s * d
    decoder = (2 * m * (4 * d * d + 2 * d * f) + 4 * b * t * t * d + 2 * m * 2 * d * d
               + 2 * n * 2 * d * d + 4 * b * t * s * d)
    forward = n_layers * (encoder + decoder) + 2 * m * d * v
    flops = train_step.gemm_flops(train_step.transformer_gemm_shapes(cfg))
    assert flops == 3 * forward
    assert 85e9 < flops < 88e9


def test_decode_on_tiny(tmp_path):
    out_json = tmp_path / "decode.json"
    run("decode.py", "--config", "tiny", "--batches", "1", "--repeat", "1", "--max-len", "6",
        "--threads", "1", "--json", str(out_json))
    result = json.loads(out_json.read_text())
    kinds = {(r["framework"], r["search"]) for r in result["rows"]}
    assert {("minis2s", "greedy"), ("minis2s", "beam5")} <= kinds
    if HAVE_TORCH:
        assert result["greedy_agreement"] == 1.0


def test_ops_overhead_runs():
    text = run("ops.py", "--chain", "5", "--repeat", "2")
    assert "matmul" in text and "overhead" in text


def test_lstm_cell_benchmark_runs():
    text = run("lstm_cell.py", "--repeat", "2")
    assert "speed-up" in text


def test_flat_adam_benchmark_runs_both_sides_on_the_same_arithmetic():
    text = run("flat_adam.py", "--config", "tiny", "--reps", "2", "--step-reps", "2")
    for name in ("Adam step", "clip + Adam step", "training step"):
        assert name in text and "flat / per-parameter" in text
    last = text.strip().splitlines()[-1]                  # losses after the last step
    flat_loss, loop_loss = [part.split()[-1] for part in last.split(":", 1)[1].split(",")]
    assert flat_loss == loop_loss


def test_contention_benchmark_runs_and_reports_the_threads_it_used(tmp_path):
    out_json = tmp_path / "contention.json"
    text = run("contention.py", "--repeat", "1", "--busy", "0", "--threads", "1",
               "--workloads", "step", "--json", str(out_json))
    rows = json.loads(out_json.read_text())["rows"]
    assert [(r["workload"], r["busy"], r["threads"], r["blas_threads"]) for r in rows] == \
        [("step", 0, "1", [1])]
    assert rows[0]["slowdown"] == 1.0 and "vs best alone" in text


def test_workers_run_each_framework_at_its_defaults_with_only_its_thread_count_set(
        tmp_path, monkeypatch):
    """Asks each RUNNING worker what it has: no threading or wait-policy variable may reach it
    (even when the parent has them), and the thread counts are those asked for, set by each
    framework's own call."""
    pytest.importorskip("threadpoolctl", reason="the workers report their BLAS through threadpoolctl")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import common
    for var, value in [("OMP_WAIT_POLICY", "PASSIVE"), ("OMP_NUM_THREADS", "1"),
                       ("KMP_BLOCKTIME", "0"), ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1")]:
        monkeypatch.setenv(var, value)
    weights = str(tmp_path / "w.npz")
    common.save_weights(common.build_minis2s(common.CONFIGS["tiny"]), weights)
    script = os.path.join(ROOT, "benchmarks", "train_step.py")
    wargs = ["--config", "tiny", "--device", "cpu", "--weights", weights, "--malloc", "default"]
    frameworks = ["minis2s"] + (["torch"] if HAVE_TORCH else [])
    for framework in frameworks:
        worker = common.Worker(script, framework, wargs, threads=2)
        try:
            seen = worker.ask(cmd="describe")
        finally:
            worker.close()
        assert seen["threading_env_at_start"] == {} and seen["threading_env"] == {}, framework
        if framework == "minis2s":
            assert seen["blas"] and all(b["threads"] == 2 and b["kernel"] for b in seen["blas"])
        else:
            assert seen["torch_threads"] == 2 and seen["torch_interop_threads"] >= 1
