"""The language model's LSTM stack alone, forward + backward: minis2s's ``grad.nn.LSTM``,
PyTorch's ``torch.nn.LSTM`` and the NumPy GEMM floor of the stack's matrix products.

    python benchmarks/lstm_stack.py [--config tiny|small|medium] [--runs 3] [--repeat 20]
                                    [--threads 2] [--json FILE]

The sizes are the LM benchmark's (``train_step.py --arch lm``, ``common.LM_CONFIGS``): ``L``
layers of ``E`` inputs (the first) and ``H`` hidden units over ``T - 1`` steps of ``B`` rows,
batch-first, no padding, no dropout. One pass is the stack's forward on a ``(B, T-1, E)`` input
that needs a gradient (as the embedding's output does) and the backward of ``sum(out * c)``
for a fixed random ``c``: every gradient of the stack, input included. The GEMM floor is the
time NumPy's ``matmul`` alone takes for the same products (``train_step.lm_gemm_shapes`` without
the generator: the input projection of all steps, one ``h W_hh^T`` per step, their input and
weight gradients).

Each of the three is timed in a fresh process of its own, one after the other, ``--runs``
times in turn, nothing else alive: each framework as its users run it (no threading or
wait-policy variable, ``common.worker_env``; thread count by its own call,
``common.set_threads``), the same allocator policy for all (``--malloc``, default tuned). A run's
figure is the median of ``--repeat`` passes after 3 untimed ones; the report gives the median
of the runs and every run.

What it shows: PyTorch's ``nn.LSTM`` runs each layer as one oneDNN RNN primitive (the gates'
elementwise work fused and threaded, in compiled code); minis2s runs one NumPy call per
elementwise pass of each step. ``torch / floor`` is how close PyTorch's whole stack comes to
the bare products; ``minis2s / floor`` how close minis2s does.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)
import train_step  # noqa: E402  (lm_gemm_shapes, time_gemm_floor)

KINDS = ("floor", "minis2s", "torch")


def stack_pass(kind: str, cfg: dict):
    """A function running one forward + backward pass of the stack in framework ``kind``."""
    b, t, e, h, n_layers = cfg["B"], cfg["T"] - 1, cfg["E"], cfg["H"], cfg["L"]
    rng = common.np.random.default_rng(0)
    x_host = rng.standard_normal((b, t, e), dtype=common.np.float32)
    c_host = rng.standard_normal((b, t, h), dtype=common.np.float32)
    if kind == "torch":
        import torch
        torch.manual_seed(0)
        lstm = torch.nn.LSTM(e, h, n_layers, batch_first=True)
        x = torch.from_numpy(x_host).requires_grad_(True)
        c = torch.from_numpy(c_host)

        def one():
            x.grad = None
            lstm.zero_grad(set_to_none=True)
            out, _ = lstm(x)                                       # (B, T-1, H)
            (out * c).sum().backward()
        return one
    import grad
    from grad import backend as B
    lstm = grad.nn.LSTM(e, h, n_layers, batch_first=True, generator=grad.Generator(0))
    x = grad.tensor(B.from_numpy(x_host), requires_grad=True)
    c = grad.tensor(B.from_numpy(c_host))

    def one():
        x.grad = None
        for p in lstm.parameters():
            p.grad = None
        out, _ = lstm(x)                                           # (B, T-1, H)
        (out * c).sum().backward()
    return one


def worker(kind: str, config: str, repeat: int, threads: int, malloc: str) -> dict:
    """Time ``kind`` in this process; returns the run's figures and what the process has."""
    allocator = common.set_allocator(malloc)
    common.set_threads("torch" if kind == "torch" else "minis2s", threads)
    cfg = common.LM_CONFIGS[config]
    if kind == "floor":
        seconds = train_step.time_gemm_floor(train_step.lm_gemm_shapes(cfg, generator=False),
                                             repeat=repeat)
    else:
        seconds = common.median_seconds(stack_pass(kind, cfg), repeat, warmup=3)
    return {"kind": kind, "seconds": seconds, "allocator": allocator, "blas": common.blas_info(),
            "process": common.describe_process()}


def run_worker(kind: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--config", args.config,
           "--repeat", str(args.repeat), "--threads", str(args.threads), "--malloc", args.malloc]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=common.worker_env())
    if proc.returncode != 0:
        raise SystemExit(f"lstm_stack.py: the {kind} worker failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(common.LM_CONFIGS), default="small")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, in turn (default 3)")
    parser.add_argument("--repeat", type=int, default=20, help="timed passes per run (default 20)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads (default: all cores)")
    parser.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                        help="host allocator policy of every worker (default tuned)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeat < 1 or args.threads < 1:
        parser.error("--runs, --repeat and --threads must be positive")
    if args.worker:
        print(json.dumps(worker(args.worker, args.config, args.repeat, args.threads, args.malloc)))
        return 0

    import importlib.util
    kinds = [k for k in KINDS if k != "torch" or importlib.util.find_spec("torch") is not None]
    runs = {k: [] for k in kinds}
    seen = {}
    for _ in range(args.runs):
        for kind in kinds:
            result = run_worker(kind, args)
            runs[kind].append(result["seconds"])
            seen[kind] = {k: result[k] for k in ("allocator", "blas", "process")}
    median = {k: statistics.median(v) for k, v in runs.items()}
    cfg = common.LM_CONFIGS[args.config]
    print(f"LSTM stack {args.config} {cfg}: forward + backward, {args.threads} threads, "
          f"allocator {seen['floor']['allocator']}; {seen['floor']['blas']}")
    print(f"{'':<10} {'median ms':>10}  runs (ms)")
    for kind in kinds:
        name = {"floor": "GEMM floor", "minis2s": "minis2s", "torch": "PyTorch"}[kind]
        print(f"{name:<10} {median[kind] * 1e3:>10.1f}  "
              + ", ".join(f"{s * 1e3:.1f}" for s in runs[kind]))
    ratios = {"minis2s_over_floor": median["minis2s"] / median["floor"]}
    if "torch" in runs:
        ratios["torch_over_floor"] = median["torch"] / median["floor"]
        ratios["minis2s_over_torch"] = median["minis2s"] / median["torch"]
    else:
        print("PyTorch: not installed (pip install torch to compare)")
    print("; ".join(f"{k.replace('_over_', ' / ')} {v:.2f}" for k, v in ratios.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "sizes": cfg, "threads": args.threads,
                       "runs_s": runs, "median_s": median, **ratios, "workers": seen}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
