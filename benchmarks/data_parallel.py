"""Data-parallel throughput: 1 process x 2 BLAS threads against 2 MPI ranks x 1 thread each.

    python benchmarks/data_parallel.py --config small             # the table for one config
    python benchmarks/data_parallel.py --config tiny --steps 2 --warmup 1     # a smoke run

Both sides train the same model (benchmarks/common.py: the reference workload, no dropout) on
the same global batches of B sentences: the single process takes each whole batch; each of the
2 ranks (``mpiexec -n 2``, MPICH from ``pip install ".[mpi]"``) takes its half, divides its
summed loss by the global target-token count, and the ranks sum their gradients with one
``Allreduce`` over a flat buffer (``minis2s.distributed.Communicator.sum_gradients``) before the
same clipping and Adam step.

Reported per configuration (median over the timed steps):

* target tokens per second of each side, and their ratio (2 ranks / 1 process);
* the time of the ``Allreduce`` itself, measured after a barrier, so that waiting for the
  slower rank is reported on its own (``wait``) and not counted as communication;
* the bytes of the gradient buffer and the bytes a ring allreduce moves per rank and step,
  2 (N - 1) / N x the buffer.

Run it on a quiet machine: MPICH's ranks busy-poll while they wait, and any other busy process
on the same cores distorts both sides (docs/distributed.md).
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import CONFIGS, PAD, ROOT, build_minis2s, make_batches  # noqa: E402


def _mpiexec() -> str | None:
    import shutil
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


# ----------------------------------------------------------------------------- one worker
def worker(config: str, threads: int, steps: int, warmup: int, out: str) -> None:
    """Train ``warmup + steps`` steps as one process or as one rank; rank 0 writes the figures."""
    import numpy as np

    import grad
    from grad import backend as B
    from grad.nn.utils import clip_grad_norm_
    from minis2s import distributed

    comm = distributed.init()
    B.set_num_threads(threads)
    B.tune_host_allocator()
    cfg = CONFIGS[config]
    model = build_minis2s(cfg)
    params = list(model.parameters())
    optimizer = grad.optim.Adam(params, lr=1e-3)
    if comm is not None:
        comm.broadcast_parameters(params)
    batches = make_batches(cfg, n_batches=4)
    times, waits, reduces, tokens = [], [], [], []
    for i in range(warmup + steps):
        d = batches[i % len(batches)]
        lo, hi = comm.shard_bounds(cfg["B"]) if comm is not None else (0, cfg["B"])
        n_local = int((d["tgt_out"][lo:hi] != PAD).sum())
        if comm is not None:
            comm.barrier()                              # every step starts together
        t0 = time.perf_counter()
        n_global = comm.sum_count(n_local) if comm is not None else n_local
        total = model.loss(grad.Tensor(B.from_numpy(d["src"][lo:hi])),
                           B.from_numpy(d["src_lengths"][lo:hi]),
                           grad.Tensor(B.from_numpy(d["tgt_in"][lo:hi])),
                           grad.Tensor(B.from_numpy(d["tgt_out"][lo:hi])), reduction="sum")
        loss = total / float(n_global)
        optimizer.zero_grad()
        loss.backward()
        wait = reduce = 0.0
        if comm is not None:
            t1 = time.perf_counter()
            comm.barrier()                              # waiting for the slower rank ...
            t2 = time.perf_counter()
            comm.sum_gradients(params)                  # ... is not the allreduce's time
            reduce = comm.last_allreduce_s
            wait = t2 - t1
        clip_grad_norm_(params, 5.0)
        optimizer.step()
        elapsed = time.perf_counter() - t0
        if i >= warmup:
            times.append(elapsed)
            waits.append(wait)
            reduces.append(reduce)
            tokens.append(n_global)
    if comm is not None:                                # the slowest rank sets the pace
        times = [max(col) for col in zip(*comm.allgather(times))]
    if comm is None or comm.is_root:
        step = statistics.median(times)
        n_bytes = comm.last_bytes if comm is not None else sum(
            int(np.prod(p.shape)) * 4 for p in params)
        ranks = comm.size if comm is not None else 1
        figures = {"config": config, "ranks": ranks, "threads": threads,
                   "blas_threads": B.get_num_threads(), "steps": steps,
                   "step_s": step, "tokens_per_s": statistics.median(tokens) / step,
                   "allreduce_s": statistics.median(reduces), "wait_s": statistics.median(waits),
                   "buffer_bytes": n_bytes,
                   "ring_bytes_per_rank": 2 * (ranks - 1) / ranks * n_bytes if ranks > 1 else 0,
                   "library": comm.library if comm is not None else None}
        Path(out).write_text(json.dumps(figures))


# ----------------------------------------------------------------------------- the driver
def run_side(config: str, ranks: int, threads: int, steps: int, warmup: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "PMIX_", "SLURM_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "figures.json")
        cmd = [sys.executable, __file__, "--worker", "--config", config, "--threads", str(threads),
               "--steps", str(steps), "--warmup", str(warmup), "--out", out]
        if ranks > 1:
            launcher = _mpiexec()
            if launcher is None:
                sys.exit('data_parallel.py: no mpiexec found; pip install ".[mpi]" (mpi4py, mpich)')
            cmd = [launcher, "-n", str(ranks)] + cmd
        subprocess.run(cmd, env=env, check=True)
        return json.loads(Path(out).read_text())


def table(rows: list[tuple[dict, dict]]) -> str:
    lines = ["| config | 1 x 2 threads tokens/s | 2 ranks x 1 thread tokens/s | ratio | "
             "step ms (2 ranks) | allreduce ms (% of step) | wait ms | gradient buffer MB | "
             "ring MB per rank and step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for one, two in rows:
        lines.append(
            f"| {one['config']} | {one['tokens_per_s']:.0f} | {two['tokens_per_s']:.0f} | "
            f"{two['tokens_per_s'] / one['tokens_per_s']:.2f} | {1e3 * two['step_s']:.1f} | "
            f"{1e3 * two['allreduce_s']:.2f} ({100 * two['allreduce_s'] / two['step_s']:.1f}%) | "
            f"{1e3 * two['wait_s']:.2f} | {two['buffer_bytes'] / 1e6:.2f} | "
            f"{two['ring_bytes_per_rank'] / 1e6:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", choices=sorted(CONFIGS),
                   help="configuration(s) to measure (default: small and medium)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.config[0], args.threads, args.steps, args.warmup, args.out)
        return 0
    rows = []
    for config in args.config or ["small", "medium"]:
        one = run_side(config, 1, 2, args.steps, args.warmup)
        two = run_side(config, 2, 1, args.steps, args.warmup)
        rows.append((one, two))
    library = rows[0][1]["library"]
    print(f"data-parallel throughput ({library}; {args.steps} timed steps after {args.warmup}, "
          f"medians; allreduce timed after a barrier)")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([{"one": a, "two": b} for a, b in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
