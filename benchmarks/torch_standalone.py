"""The benchmark's PyTorch model timed in a plain script, as a PyTorch user would run it.

    python benchmarks/torch_standalone.py --config tiny|small|medium [--threads N] [--steps 20]
    python benchmarks/torch_standalone.py --arch lm --config tiny|small|medium [...]

No worker process, no other framework alive, no environment variable set: ``torch.set_num_threads``
is the only setting. Same model (``common.torch_model``, or ``common.torch_lm`` with
``--arch lm``), same weights and batches as benchmarks/train_step.py, so its median is the check that the fixed benchmark runs PyTorch at
full speed (docs/performance.md compares the two).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["lstm", "lm"], default="lstm",
                        help="the LSTM seq2seq (default) or the LSTM language model")
    parser.add_argument("--config", choices=sorted(common.CONFIGS), default="small")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    lm = args.arch == "lm"
    cfg = (common.LM_CONFIGS if lm else common.CONFIGS)[args.config]
    weights = os.path.join(tempfile.mkdtemp(prefix="minis2s-bench-"), "weights.npz")
    common.save_weights((common.build_minis2s_lm if lm else common.build_minis2s)(cfg), weights)
    model = (common.torch_lm if lm else common.torch_model)(cfg, weights)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=common.LM_LR if lm else 1e-3)
    if lm:
        batches = [torch.from_numpy(d["ids"]) for d in common.make_lm_batches(cfg)]
    else:
        batches = common.torch_batches(cfg)
    one_step = common.torch_lm_step if lm else common.torch_step
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        one_step(model, optimizer, batches[i % len(batches)])
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    print(f"PyTorch {torch.__version__} standalone, {args.arch} config {args.config}, "
          f"{torch.get_num_threads()} threads: median {statistics.median(times) * 1e3:.1f} ms over "
          f"{len(times)} steps (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
