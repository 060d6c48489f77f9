"""Adam over one flat parameter buffer against Adam parameter by parameter, A/B in ONE process.

    python benchmarks/flat_adam.py --config small|medium [--reps 20] [--step-reps 8]

Two copies of the benchmark's LSTM seq2seq (benchmarks/common.py, same weights, same batches):
one with ``Adam(..., flat=True)`` (``grad.optim.adam_step``: the parameters live in one buffer,
a few whole-buffer passes), one with ``Adam(..., flat=False)`` (``adam_update`` on each
parameter). The two are timed alternately (A, B, A, B, ...) so that drift of a shared machine
touches both alike:

* the optimizer step alone (``opt.step()`` with fixed gradients; the flat side includes
  gathering the gradients into its buffer, which the per-parameter side does not need);
* clipping + the optimizer step (what the flat buffer changes in a training step);
* a whole training step (``common.minis2s_step``: loss, backward, clip at 5, Adam).

Printed: medians (and the 25th-75th percentile) in ms and the ratio flat / per-parameter. The
two models' losses after the last step are printed too: they must agree (same arithmetic).
Figures from a loaded machine are indicative only; measure on a quiet one for a doc.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def _alternate(fa, fb, reps: int):
    """Times of ``fa`` and ``fb`` (seconds), called alternately ``reps`` times each."""
    ta, tb = [], []
    for i in range(reps):
        for f, out in ((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta)):
            t0 = time.perf_counter()
            f()
            out.append(time.perf_counter() - t0)
    return ta, tb


def _line(name: str, ta, tb) -> str:
    def q(ts):
        ts = sorted(ts)
        return (statistics.median(ts) * 1e3, common.percentile(ts, 25) * 1e3,
                common.percentile(ts, 75) * 1e3)
    (ma, la, ha), (mb, lb, hb) = q(ta), q(tb)
    return (f"{name:<26} flat {ma:8.2f} ms ({la:.2f}-{ha:.2f})   per-parameter {mb:8.2f} ms "
            f"({lb:.2f}-{hb:.2f})   flat / per-parameter {ma / mb:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small", choices=sorted(common.CONFIGS))
    parser.add_argument("--reps", type=int, default=20, help="optimizer-step repetitions")
    parser.add_argument("--step-reps", type=int, default=8, help="training-step repetitions")
    args = parser.parse_args(argv)

    import numpy as np
    from grad import backend as B
    from grad.nn.utils import clip_grad_norm_
    from grad.optim import Adam
    allocator = common.set_allocator("tuned")
    cfg = common.CONFIGS[args.config]
    models = [common.build_minis2s(cfg, seed=0) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    params = [list(m.parameters()) for m in models]
    opts = [Adam(params[0], lr=1e-3, flat=True), Adam(params[1], lr=1e-3, flat=False)]
    assert opts[0].flat is not None and opts[1].flat is None
    n = sum(p.numel() for p in params[0])
    print(f"config {args.config}: {len(params[0])} parameters, {n} elements "
          f"({n * 4 / 2**20:.1f} MiB in float32); allocator {allocator}; BLAS {common.blas_info()}")

    rng = np.random.default_rng(0)
    grads = [B.from_numpy(rng.normal(size=p.shape).astype(np.float32) * 1e-2) for p in params[0]]

    def opt_step(k):
        def run():
            for p, g in zip(params[k], grads):
                p.grad = g                                  # the same arrays: a fresh step
            opts[k].step()
        return run

    def clip_and_step(k):
        def run():
            for p, g in zip(params[k], grads):
                p.grad = g
            clip_grad_norm_(params[k], 5.0)
            opts[k].step()
        return run

    batches = common.minis2s_batches(cfg)
    position = [0, 0]

    def train_step(k):
        def run():
            batch = batches[position[k] % len(batches)]
            position[k] += 1
            losses[k] = float(common.minis2s_step(models[k], params[k], opts[k], batch).item())
        return run

    losses = [None, None]
    for f in (opt_step(0), opt_step(1), clip_and_step(0), clip_and_step(1)):
        f()                                                          # warm-up
    print(_line("Adam step", *_alternate(opt_step(0), opt_step(1), args.reps)))
    print(_line("clip + Adam step", *_alternate(clip_and_step(0), clip_and_step(1), args.reps)))
    for k in (0, 1):                                                 # warm-up, same batch
        train_step(k)()
    print(_line("training step", *_alternate(train_step(0), train_step(1), args.step_reps)))
    print(f"losses after the last step: flat {losses[0]:.6f}, per-parameter {losses[1]:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
