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
               "--threads", "1", "--settle", "0.25", "--json", str(out_json))
    result = json.loads(out_json.read_text())
    ours = result["frameworks"]["minis2s"]
    assert result["settle_s"] == 0.25 and result["block"] == 1
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
               "--warmup", "1", "--block", "1", "--threads", "1", "--settle", "0", "--json", str(out_json))
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


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed: the LM benchmark compares "
                                           "minis2s's LSTM language model with PyTorch's nn.LSTM")
def test_train_step_lm_on_tiny_computes_the_same_first_loss_in_both(tmp_path):
    out_json = tmp_path / "lm.json"
    text = run("train_step.py", "--arch", "lm", "--config", "tiny", "--steps", "2",
               "--warmup", "1", "--block", "1", "--threads", "1", "--settle", "0", "--json", str(out_json))
    result = json.loads(out_json.read_text())
    assert result["arch"] == "lm" and result["sizes"]["H"] == 64
    ours, theirs = result["frameworks"]["minis2s"], result["frameworks"]["torch"]
    assert ours["steps"] == theirs["steps"] == 2
    # minis2s's lm train_step and nn.Embedding + nn.LSTM + nn.Linear + F.cross_entropy from the
    # same weights on the same batch: the same loss per token up to float32 rounding (a random
    # model over V=100 starts near log(100) = 4.6; a wrong shift, mask or normalisation would show)
    assert theirs["first_loss"] == pytest.approx(ours["first_loss"], rel=1e-5)
    assert 4.0 < ours["first_loss"] < 5.2
    train_step = train_step_module()
    cfg = result["sizes"]
    data = train_step.common.make_lm_batches(cfg)
    assert result["target_tokens_per_step"] == sum(d["n_tokens"] for d in data) / len(data)
    assert result["gemm_flops"] == train_step.gemm_flops(train_step.lm_gemm_shapes(cfg))
    assert result["minis2s_over_floor"] == pytest.approx(ours["median_s"] / result["gemm_floor_s"], rel=1e-12)
    assert result["ratio_time"] == pytest.approx(ours["median_s"] / theirs["median_s"], rel=1e-12)
    assert result["ratio_memory"] == pytest.approx(ours["peak_memory_mb"] / theirs["peak_memory_mb"], rel=1e-12)
    assert "LSTM language model config tiny" in text and "minis2s / PyTorch" in text


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed: the standalone script times PyTorch")
def test_torch_standalone_runs_the_lm():
    text = run("torch_standalone.py", "--arch", "lm", "--config", "tiny", "--threads", "1",
               "--steps", "2", "--warmup", "0")
    assert "lm config tiny, 1 threads: median" in text and "over 2 steps" in text


def test_lm_gemm_floor_counts_the_documented_products():
    """The shapes add up to the closed form of ``lm_gemm_shapes``'s docstring (3x the forward
    products), on the medium configuration of the issue (V=8000 E=256 H=512 L=2 B=64 T=40)."""
    train_step = train_step_module()
    cfg = train_step.common.LM_CONFIGS["medium"]
    assert cfg == dict(V=8000, E=256, H=512, L=2, B=64, T=40)
    b, t, e, h, v, n_layers = (cfg[k] for k in ("B", "T", "E", "H", "V", "L"))
    n = b * (t - 1)
    forward = (2 * n * e * 4 * h + 2 * n * h * 4 * h                 # layer 0
               + (n_layers - 1) * (2 * n * h * 4 * h + 2 * n * h * 4 * h)   # layers above
               + 2 * n * h * v)                                      # generator
    assert train_step.gemm_flops(train_step.lm_gemm_shapes(cfg)) == 3 * forward
    assert train_step.common.LM_CONFIGS["small"] == dict(V=1000, E=128, H=256, L=2, B=64, T=30)


def test_decode_on_tiny(tmp_path):
    out_json = tmp_path / "decode.json"
    run("decode.py", "--config", "tiny", "--batches", "1", "--repeat", "1", "--max-len", "6",
        "--threads", "1", "--settle", "0.25", "--json", str(out_json))
    result = json.loads(out_json.read_text())
    assert result["settle_s"] == 0.25
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



def test_work_sharing_benchmark_checks_its_product_and_reports_every_scheme(tmp_path):
    out_json = tmp_path / "sharing.json"
    text = run("work_sharing.py", "--config", "tiny", "--busy", "0", "--repeat", "1",
               "--min-mflops", "0", "--json", str(out_json))
    assert "hand-over to the worker" in text
    rows = json.loads(out_json.read_text())["rows"]
    assert {r["scheme"] for r in rows} == {"blas1", "blas2", "shared", "hand-over", "blas-idle-spin"}
    assert all(r["seconds"] > 0 and r["slowdown"] >= 1.0 - 1e-12 for r in rows if "seconds" in r)
    assert min(r["slowdown"] for r in rows if "seconds" in r) == 1.0


def test_lstm_stack_benchmark_times_each_side_in_a_clean_process(tmp_path):
    out_json = tmp_path / "stack.json"
    text = run("lstm_stack.py", "--config", "tiny", "--runs", "2", "--repeat", "2", "--threads", "1",
               "--json", str(out_json))
    result = json.loads(out_json.read_text())
    kinds = ["floor", "minis2s"] + (["torch"] if HAVE_TORCH else [])
    assert sorted(result["runs_s"]) == sorted(kinds) and "GEMM floor" in text
    for kind in kinds:
        runs = result["runs_s"][kind]
        assert len(runs) == 2 and all(s > 0 for s in runs)
        assert result["median_s"][kind] == pytest.approx(sum(runs) / 2, rel=1e-12)
        seen = result["workers"][kind]["process"]
        assert seen["threading_env"] == {}                  # the parent's OMP_/OPENBLAS_ stripped
        if kind != "torch":                                  # NumPy's BLAS, set by its own call
            assert all(b["threads"] == 1 for b in seen["blas"])
    m = result["median_s"]
    assert result["minis2s_over_floor"] == pytest.approx(m["minis2s"] / m["floor"], rel=1e-12)
    if HAVE_TORCH:
        assert result["workers"]["torch"]["process"]["torch_threads"] == 1
        assert result["minis2s_over_torch"] == pytest.approx(m["minis2s"] / m["torch"], rel=1e-12)
    else:
        assert "PyTorch: not installed" in text


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


STEP_FUSED = {"accumulate", "getitem", "cross_entropy", "linear", "lstm_layer", "lstm_step",
              "attention_lookup", "adam_step", "clip_gradients"}


def test_optimisations_on_tiny_times_every_variant_and_checks_what_it_ran(tmp_path):
    """Every variant (both allocators, full reference mode, each fused function of the step on
    its reference) runs in its own worker and really runs as named: the script traces one step
    of each and the swapped fast twins are absent, the others present. The costs are the
    medians' differences from the baseline, and every variant computes the same first loss."""
    out_json = tmp_path / "opt.json"
    text = run("optimisations.py", "--config", "tiny", "--repeat", "1", "--steps", "1",
               "--warmup", "1", "--threads", "1", "--json", str(out_json))
    r = json.loads(out_json.read_text())
    assert set(r["fused_used"]) == STEP_FUSED
    rows = {v["name"]: v for v in r["variants"]}
    base = r["variants"][0]
    assert base["name"] == "fast code, --malloc tuned" and base["runs"][0]["allocator"] == "tuned"
    assert rows["fast code, --malloc default"]["runs"][0]["allocator"] == "default"
    assert set(base["fast_entered"]) == STEP_FUSED
    assert rows["full reference mode"]["fast_entered"] == []
    assert rows["every fused function on its reference, the model's layout fast"]["fast_entered"] == []
    assert len(rows) == 4 + len(STEP_FUSED)
    swapped = {v["function"]: v for v in r["variants"] if "function" in v}
    assert set(swapped) == STEP_FUSED
    assert set(swapped["accumulate"]["reference"].split(",")) == \
        {"accumulate", "getitem", "linear", "lstm_step", "attention_lookup"}
    for name, v in swapped.items():
        assert not set(v["reference"].split(",")) & set(v["fast_entered"]), name
        assert STEP_FUSED - set(v["reference"].split(",")) <= set(v["fast_entered"]), name
    for v in r["variants"]:
        assert len(v["runs"]) == 1 and v["median_s"] == v["runs"][0]["median_s"] > 0
        assert v["peak_memory_mb"] > 0
        if v is not base:
            assert v["cost_s"] == pytest.approx(v["median_s"] - base["median_s"], rel=1e-12)
        assert f"| {v['name']} |" in text
    assert r["first_loss_spread"] < 1e-5
    assert r["machine"]["threading_env"] == {}


def test_profile_step_on_tiny_counts_each_fused_function_once_per_graph_node(tmp_path):
    """The per-function rows come from cProfile, the node counts from the graph itself: a fused
    op makes one node per call, so the two counts must agree; the floor is the benchmark's."""
    out_json = tmp_path / "profile.json"
    text = run("profile_step.py", "--config", "tiny", "--steps", "2", "--warmup", "1",
               "--threads", "1", "--json", str(out_json))
    r = json.loads(out_json.read_text())
    assert set(r["fused_used"]) == STEP_FUSED
    rows = {row["function"]: row for row in r["rows"]}
    for op in ("linear", "lstm_layer", "lstm_step", "attention_lookup", "cross_entropy"):
        forward = rows[f"grad.functional.{op}, forward"]
        assert forward["calls_per_step"] == r["graph_nodes_by_op"][op] > 0, op
        assert rows[f"grad.functional.{op}, backward"]["calls_per_step"] == forward["calls_per_step"]
    assert rows["grad.ops.getitem, forward"]["calls_per_step"] == r["graph_nodes_by_op"]["getitem"]
    assert r["graph_nodes"] == sum(r["graph_nodes_by_op"].values())
    forward, backward = rows["the forward pass (model.loss)"], rows["the backward sweep (Tensor.backward)"]
    assert forward["calls_per_step"] == backward["calls_per_step"] == 1
    for name, row in rows.items():        # cumulative times: each part within its whole
        if name.endswith(", forward"):
            assert row["ms_per_step"] <= forward["ms_per_step"], name
        if name.endswith(", backward") or ".dense" in name:
            assert row["ms_per_step"] <= backward["ms_per_step"], name
    train_step = train_step_module()
    assert r["gemm_flops"] == train_step.gemm_flops(train_step.gemm_shapes(r["sizes"]))
    assert r["gemm_floor_s"] > 0 and len(r["step_times"]) == 2
    assert "GEMM floor" in text and "| `grad.functional.linear, forward` |" in text


def test_profile_step_profiles_the_language_model_step_against_its_own_floor(tmp_path):
    """``--arch lm``: the LM step of ``train_step.py`` (one ``lstm_layer`` node per layer, no
    ``lstm_step``), each fused row once per graph node, and the floor of ``lm_gemm_shapes``."""
    out_json = tmp_path / "profile.json"
    run("profile_step.py", "--arch", "lm", "--config", "tiny", "--steps", "1", "--warmup", "1",
        "--threads", "1", "--json", str(out_json))
    r = json.loads(out_json.read_text())
    assert r["arch"] == "lm" and {"lstm_layer", "linear", "cross_entropy"} <= set(r["fused_used"])
    assert "lstm_step" not in r["fused_used"]
    rows = {row["function"]: row for row in r["rows"]}
    assert r["graph_nodes_by_op"]["lstm_layer"] == r["sizes"]["L"] == \
        rows["grad.functional.lstm_layer, forward"]["calls_per_step"]
    assert rows["grad.functional.linear, forward"]["calls_per_step"] == \
        r["graph_nodes_by_op"]["linear"] == r["sizes"]["L"] + 1   # input projections, generator
    train_step = train_step_module()
    assert r["gemm_flops"] == train_step.gemm_flops(train_step.lm_gemm_shapes(r["sizes"]))


def test_optimisations_and_profile_step_refuse_bad_arguments_with_exit_2():
    for script, args, words in [("optimisations.py", ["--config", "base"], "not a lstm configuration"),
                                ("profile_step.py", ["--steps", "0"], "must be positive"),
                                ("train_step.py", ["--settle", "-1"], "not negative"),
                                ("decode.py", ["--settle", "-1"], "not negative"),
                                ("optimisations.py", ["--malloc", "default"], "set per variant")]:
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 2 and words in proc.stderr, (script, proc.stderr)
