"""Could our own thread scheduler keep the step's speed beside a busy process? A measured answer.

    python benchmarks/work_sharing.py [--config small] [--busy 0 1] [--repeat 5] [--blocks 2]
                                      [--min-mflops 50] [--json FILE]

docs/performance.md ("BLAS threads on a busy machine") bounds what any thread scheme can do for
the small config's step beside one busy process on two cores: 1.25x its time alone, and only with
work split on the fly to match the share of the cores each thread gets, no spinning, and nothing
lost handing work over. This script measures how close a simple scheme of that kind comes, on
the matrix products of the step (``train_step.gemm_shapes``, the GEMM floor's list), three ways:

* ``blas1``: NumPy's matmul with one OpenBLAS thread;
* ``blas2``: with two OpenBLAS threads (each product split evenly up front; its threads spin);
* ``shared``: OpenBLAS at one thread, each product of at least ``--min-mflops`` MFLOP cut into
  ``--blocks`` row blocks that the calling thread and one worker thread take from a shared
  counter (smaller products run on the caller alone: there a hand-over costs more than it
  saves; the defaults, 2 blocks and 50 MFLOP, were the best of 2/4/8 blocks and 0/50 MFLOP on
  the small config, 2026-12-03), each writing its rows of the
  output (NumPy releases the GIL inside matmul). Nothing spins: the worker sleeps on a condition
  variable between products, and the caller sleeps (``time.sleep(0)``, a yield) only while the
  worker finishes the block it took. A worker that the kernel has descheduled simply takes no
  block, so the split follows the share each thread gets.

For each scheme, alone and beside ``--busy`` busy processes (``while True: pass``), it prints the
time of all the step's products (each product's median over ``--repeat`` runs, times its count)
and the slowdown against the best scheme alone; the hand-over latency: how long a worker
thread takes to start a job after it is notified (median and 90th percentile of 200); and how
much CPU OpenBLAS's idle thread burns while the caller sleeps 0.1 s after one 2-thread product
(its threads busy-wait for the next call before they sleep, so at 2 BLAS threads the second core
is never free for a thread of ours between the products of a step).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py; puts the repository on sys.path)
import train_step  # noqa: E402
from contention import start_busy, stop  # noqa: E402  (the same busy loops)


class SharedProducts:
    """The caller and ONE worker thread share the row blocks of a product."""

    def __init__(self):
        self._wake = threading.Condition()
        self._job = None
        self._posted = 0                       # jobs posted so far; the worker runs each once
        self._posted_at = 0.0                  # perf_counter() when the last job was posted
        self.started_after = []                # hand-over latencies seen by the worker (s)
        threading.Thread(target=self._worker, daemon=True).start()

    def _worker(self):
        done = 0
        while True:
            with self._wake:
                while self._posted == done:
                    self._wake.wait()
                done, job = self._posted, self._job
                self.started_after.append(time.perf_counter() - self._posted_at)
            self._take_blocks(job)

    @staticmethod
    def _take_blocks(job):
        fn, blocks, lock, counters = job       # counters: [next block to take, blocks finished]
        while True:
            with lock:
                i = counters[0]
                counters[0] += 1
            if i >= len(blocks):
                return
            fn(*blocks[i])
            with lock:
                counters[1] += 1

    def run(self, fn, blocks):
        """``fn(*block)`` for every block, on this thread and the worker; returns when all are done."""
        job = (fn, blocks, threading.Lock(), [0, 0])
        with self._wake:
            self._job, self._posted_at = job, time.perf_counter()
            self._posted += 1
            self._wake.notify()
        self._take_blocks(job)
        while job[3][1] < len(blocks):         # the worker still holds its last block
            time.sleep(0)

    def matmul(self, a, b, out, n_blocks: int):
        """``out = a @ b`` for 2-D ``a`` ``(M, K)``, split into ``n_blocks`` blocks of rows."""
        rows = -(-a.shape[0] // n_blocks)
        blocks = [(a[i:i + rows], out[i:i + rows]) for i in range(0, a.shape[0], rows)]
        self.run(lambda x, y: np.matmul(x, b, out=y), blocks)


def product_times(shapes, scheme: str, sharer: SharedProducts, repeat: int, n_blocks: int,
                  min_flops: float = 0.0) -> float:
    """Seconds for all ``shapes`` (count x median of ``repeat``) under one scheme."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    total = 0.0
    with threadpool_limits(limits=2 if scheme == "blas2" else 1, user_api="blas"):
        for count, a_shape, b_shape in shapes:
            a = rng.standard_normal(a_shape, dtype=np.float32)
            b = rng.standard_normal(b_shape, dtype=np.float32)
            out = np.empty(a_shape[:-1] + b_shape[-1:], dtype=np.float32)
            small = 2.0 * a.size * b_shape[-1] < min_flops      # shared: run small ones directly
            if scheme == "shared" and a.ndim == 2 and not small:
                def once():
                    sharer.matmul(a, b, out, n_blocks)
            elif scheme == "shared" and not small:   # a stacked product: share the stack's entries
                def once():
                    sharer.run(lambda x, y, z: np.matmul(x, y, out=z),
                               [(a[i], b[i], out[i]) for i in range(a.shape[0])])
            else:
                def once():
                    np.matmul(a, b, out=out)
            total += count * common.median_seconds(once, repeat)
    return total


def check_shared_product(sharer: SharedProducts, n_blocks: int) -> None:
    """The shared product equals NumPy's (same rows, same inner sums up to rounding)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((97, 33), dtype=np.float32)
    b = rng.standard_normal((33, 41), dtype=np.float32)
    out = np.full((97, 41), np.nan, dtype=np.float32)
    sharer.matmul(a, b, out, n_blocks)
    if not np.allclose(out, a @ b, rtol=1e-5, atol=1e-5):
        raise AssertionError("the shared product differs from numpy.matmul")


def hand_over(sharer: SharedProducts, n: int = 200) -> tuple[float, float]:
    """Median and 90th percentile (s) of the time from posting a job to the worker starting it."""
    sharer.started_after.clear()
    for _ in range(n):
        sharer.run(lambda: None, [()])         # one empty block: the caller usually takes it
        time.sleep(0.001)                      # let the worker go back to sleep
    seen = sorted(sharer.started_after)
    return statistics.median(seen), seen[int(0.9 * (len(seen) - 1))]


def blas_idle_spin(sleep_s: float = 0.1, repeat: int = 5) -> float:
    """CPU seconds this process burns while its caller SLEEPS for ``sleep_s`` right after one
    2-thread OpenBLAS product (median of ``repeat``): what OpenBLAS's idle thread spends
    busy-waiting for the next product. Near 0 means it went to sleep at once; near ``sleep_s``
    means it held a core the whole time."""
    from threadpoolctl import threadpool_limits
    a = np.ones((512, 512), dtype=np.float32)
    burnt = []
    with threadpool_limits(limits=2, user_api="blas"):
        for _ in range(repeat):
            a @ a
            cpu0 = time.process_time()
            time.sleep(sleep_s)
            burnt.append(time.process_time() - cpu0)
    return statistics.median(burnt)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", choices=sorted(common.CONFIGS))
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each product (default 5)")
    parser.add_argument("--blocks", type=int, default=2, help="row blocks per shared product (default 2)")
    parser.add_argument("--min-mflops", type=float, default=50.0,
                        help="shared: products under this many MFLOP run on the caller alone (default 50)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.blocks < 1 or any(b < 0 for b in args.busy):
        parser.error("--repeat and --blocks must be positive, --busy not negative")
    shapes = train_step.gemm_shapes(common.CONFIGS[args.config])
    sharer = SharedProducts()
    check_shared_product(sharer, args.blocks)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, {common.blas_info()}; "
          f"config {args.config}: {len(shapes)} product shapes")
    rows = []
    for busy in args.busy:
        procs = start_busy(busy)
        try:
            latency = hand_over(sharer)
            for scheme in ("blas1", "blas2", "shared"):
                seconds = product_times(shapes, scheme, sharer, args.repeat, args.blocks,
                                        args.min_mflops * 1e6)
                rows.append({"busy": busy, "scheme": scheme, "seconds": seconds})
                print(f"busy={busy}  {scheme:<7} all products {seconds * 1e3:8.1f} ms", flush=True)
        finally:
            stop(procs)
        rows.append({"busy": busy, "scheme": "hand-over", "median_s": latency[0], "p90_s": latency[1]})
        print(f"busy={busy}  hand-over to the worker: median {latency[0] * 1e6:.0f} us, "
              f"90th percentile {latency[1] * 1e6:.0f} us", flush=True)
    spin = blas_idle_spin()
    rows.append({"busy": 0, "scheme": "blas-idle-spin", "cpu_s_in_0.1_s_sleep": spin})
    print(f"after one 2-thread product, a 0.1 s sleep of the caller still burns {spin * 1e3:.0f} ms "
          "of CPU (OpenBLAS's idle thread waiting for the next product)", flush=True)
    alone = [r["seconds"] for r in rows if r["busy"] == 0 and "seconds" in r]
    if alone:
        best = min(alone)
        print(f"\n{'busy':>4} {'scheme':>7} {'ms':>9} {'vs best alone':>14}")
        for r in rows:
            if "seconds" in r:
                r["slowdown"] = r["seconds"] / best
                print(f"{r['busy']:>4} {r['scheme']:>7} {r['seconds'] * 1e3:>9.1f} {r['slowdown']:>13.2f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"blas": common.blas_info(), "config": args.config, "blocks": args.blocks,
                       "min_mflops": args.min_mflops,
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
