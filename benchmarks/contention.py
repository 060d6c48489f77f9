"""Training speed on a busy machine: BLAS threads 1, 2 and auto, alone and beside busy processes.

    python benchmarks/contention.py [--repeat 3] [--busy 0 1 2] [--threads 1 2 auto] [--json FILE]

Two workloads, each a fresh subprocess per measurement:

* ``train``: the default model's command, ``minis2s train --task dates --n-train 3000
  --n-valid 200 --n-test 200 --epochs 1 --quiet --threads T`` (wall time of the whole command);
* ``step``: the small config's training step (benchmarks/common.py, V=1000 E=128 H=256 L=2 B=64,
  length 30), median of 8 steps after 2 warm-up steps, threads set by ``--threads T`` exactly as
  the CLI sets them (minis2s.threads.apply_threads).

"Busy" processes are plain Python loops (``while True: pass``), started before the measurement
and killed after it: the situation of a student whose test suite or second training shares the
cores. Each cell is the median of ``--repeat`` runs (all shown) and its slowdown against the best
fixed thread count alone. Nothing sets a wait policy or any other threading variable.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py; puts the repository on sys.path)

TRAIN = ["train", "--task", "dates", "--n-train", "3000", "--n-valid", "200", "--n-test", "200",
         "--epochs", "1", "--quiet"]


def step_worker(threads: str) -> None:
    """Print the small config's median step time (seconds) and the thread choice as JSON."""
    from grad.optim import Adam
    from minis2s.threads import apply_threads
    cfg = common.CONFIGS["small"]
    choice = apply_threads(threads if threads == "auto" else int(threads), cfg["H"])
    model = common.build_minis2s(cfg)
    model.train()
    params = list(model.parameters())
    optimizer = Adam(params, lr=1e-3)
    batches = common.minis2s_batches(cfg)
    times = []
    for i in range(10):
        t0 = time.perf_counter()
        common.minis2s_step(model, params, optimizer, batches[i % len(batches)])
        if i >= 2:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": statistics.median(times), "blas_threads": choice["blas_threads"],
                      "reason": choice["threads_reason"]}))


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(common.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def measure(workload: str, threads: str) -> dict:
    if workload == "step":
        out = subprocess.run([sys.executable, __file__, "--step-worker", threads], env=env(),
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "minis2s", *TRAIN, "--out", "run",
                            "--threads", threads], cwd=tmp, env=env(), capture_output=True,
                           text=True)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"minis2s train failed: {r.stderr.strip()}")
        header = r.stdout.splitlines()[0]
    return {"seconds": seconds, "blas_threads": int(header.split()[0]), "reason": header}


def start_busy(n: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(0.5)                      # let them take their cores before auto looks
    return procs


def stop(procs) -> None:
    for p in procs:
        p.kill()
        p.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", nargs="+", default=["1", "2", "auto"])
    parser.add_argument("--workloads", nargs="+", default=["train", "step"], choices=["train", "step"])
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--step-worker", metavar="THREADS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step_worker:
        step_worker(args.step_worker)
        return 0
    if args.repeat < 1 or any(b < 0 for b in args.busy):
        parser.error("--repeat must be positive and --busy not negative")
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {common.blas_info()}")
    rows = []
    for workload in args.workloads:
        for busy in args.busy:
            for threads in args.threads:
                runs = []
                for _ in range(args.repeat):
                    procs = start_busy(busy)
                    try:
                        runs.append(measure(workload, threads))
                    finally:
                        stop(procs)
                med = statistics.median(r["seconds"] for r in runs)
                rows.append({"workload": workload, "busy": busy, "threads": threads,
                             "median_s": med, "runs_s": [r["seconds"] for r in runs],
                             "blas_threads": [r["blas_threads"] for r in runs]})
                shown = ", ".join(f"{r['seconds']:.3f}" for r in runs)
                used = ", ".join(str(r["blas_threads"]) for r in runs)
                print(f"{workload:<6} busy={busy}  --threads {threads:<5} median {med:8.3f} s  "
                      f"runs {shown}  (BLAS threads used: {used})", flush=True)
    print()
    print(f"{'workload':<8} {'busy':>4} {'threads':>8} {'median s':>9} {'vs best alone':>14}")
    for workload in args.workloads:
        alone = [r["median_s"] for r in rows if r["workload"] == workload and r["busy"] == 0
                 and r["threads"] != "auto"]
        best = min(alone) if alone else None
        for r in rows:
            if r["workload"] == workload:
                r["slowdown"] = r["median_s"] / best if best else None
                ratio = f"{r['slowdown']:.2f}x" if best else "-"
                print(f"{workload:<8} {r['busy']:>4} {r['threads']:>8} {r['median_s']:>9.3f} {ratio:>14}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"blas": common.blas_info(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
