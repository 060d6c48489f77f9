"""Decoding throughput: greedy and beam search (beam 5) in sentences per second, with PyTorch's
greedy decoding of the same model for comparison.

    python benchmarks/decode.py [--config small] [--batches 4] [--repeat 5] [--max-len 30]
                                [--settle 1.0] [--threads N] [--json FILE]

Both frameworks load the same weights (an untrained model: the point is speed, and with the
same weights both must produce the same tokens, which is checked and printed) and decode the
same random source batches, each in its own subprocess. An untrained model rarely picks EOS,
so most sentences run to ``--max-len``: every figure is for outputs of about that length.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)


def timed_passes(batches, repeat, decode) -> dict:
    """Time ``decode(src, src_lengths)`` on every batch, ``repeat`` times over; keep the outputs of
    the first pass (the token lists, or None) for comparison."""
    times, tokens = [], []
    for r in range(repeat):
        for src, src_lengths in batches:
            t0 = time.perf_counter()
            out = decode(src, src_lengths)
            times.append(time.perf_counter() - t0)
            if r == 0 and out is not None:
                tokens.append(out)
    return {"times": times, "tokens": tokens}


def minis2s_worker(args) -> None:
    from grad import backend as B
    from grad.tensor import Tensor
    from minis2s.search import beam_search, greedy
    cfg = common.CONFIGS[args.config]
    model = common.build_minis2s(cfg)
    model.load_state_dict({k: B.from_numpy(v) for k, v in
                           common.np.load(args.weights, allow_pickle=False).items()})
    model.eval()
    batches = [(Tensor(B.from_numpy(d["src"])), B.from_numpy(d["src_lengths"]))
               for d in common.make_batches(cfg, args.batches)]

    def decode_greedy(src, src_lengths):
        return greedy(model, src, src_lengths, max_len=args.max_len).tokens.tolist()

    def decode_beam(src, src_lengths):
        beam_search(model, src, src_lengths, beam_size=5, max_len=args.max_len)
        return None                                  # only greedy outputs are compared

    def run(kind, repeat):
        return timed_passes(batches, repeat, decode_greedy if kind == "greedy" else decode_beam)

    common.serve({"run": run}, {"framework": "minis2s", "blas": common.blas_info()})


def torch_worker(args) -> None:
    import torch
    cfg = common.CONFIGS[args.config]
    model = common.torch_model(cfg, args.weights)
    model.eval()
    batches = [(torch.from_numpy(d["src"]), torch.from_numpy(d["src_lengths"]))
               for d in common.make_batches(cfg, args.batches)]

    def run(kind, repeat):
        return timed_passes(batches, repeat, lambda src, sl: model.greedy(src, sl, args.max_len).tolist())

    common.serve({"run": run}, {"framework": "torch", "version": torch.__version__})


def same_tokens(ours, theirs) -> float:
    """Fraction of sentences whose greedy tokens agree (ours are PAD-padded after EOS)."""
    same = total = 0
    for batch_a, batch_b in zip(ours, theirs):
        for a, b in zip(batch_a, batch_b):
            n = max(len(a), len(b))
            a = a + [common.PAD] * (n - len(a))
            b = b + [common.PAD] * (n - len(b))
            same += a == b
            total += 1
    return same / max(total, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(common.CONFIGS), default="small")
    parser.add_argument("--batches", type=int, default=4, help="source batches (default 4)")
    parser.add_argument("--repeat", type=int, default=5, help="passes over the batches (default 5)")
    parser.add_argument("--max-len", type=int, default=30, help="longest output (default 30)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds of pause before each alternated greedy pass, so that the "
                             "threads of the worker whose pass just ended have gone idle "
                             "(default 1.0)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-torch", action="store_true", help="time minis2s only")
    parser.add_argument("--json", metavar="FILE")
    common.add_worker_arguments(parser)
    args = parser.parse_args(argv)
    if common.run_worker(args, minis2s_worker, torch_worker):
        return 0
    if min(args.batches, args.repeat, args.max_len, args.threads) < 1 or args.settle < 0:
        parser.error("--batches, --repeat, --max-len and --threads must be positive, --settle "
                     "not negative")

    import importlib.util
    cfg = common.CONFIGS[args.config]
    weights = os.path.join(tempfile.mkdtemp(prefix="minis2s-bench-"), "weights.npz")
    common.save_weights(common.build_minis2s(cfg), weights)
    script = os.path.abspath(__file__)
    wargs = ["--config", args.config, "--weights", weights, "--batches", str(args.batches),
             "--max-len", str(args.max_len)]
    workers = {"minis2s": common.Worker(script, "minis2s", wargs, args.threads)}
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        workers["torch"] = common.Worker(script, "torch", wargs, args.threads)
    rows, tokens = {}, {}
    try:
        plan = [("minis2s", "greedy"), ("minis2s", "beam5")] + \
            ([("torch", "greedy")] if "torch" in workers else [])
        for name, kind in plan:                       # one untimed pass each, then the timed ones
            workers[name].ask(cmd="run", kind=kind, repeat=1)
        # Greedy passes alternate between the frameworks (order reversed every pass), so that a
        # slow spell of the machine falls on both, each after a pause of --settle seconds (the
        # threads of the worker that just ran spin a while before they sleep); beam search,
        # minis2s only, comes after.
        greedy_plan = [p for p in plan if p[1] == "greedy"]
        for r in range(args.repeat):
            for name, kind in (greedy_plan if r % 2 == 0 else greedy_plan[::-1]):
                if len(greedy_plan) > 1:
                    time.sleep(args.settle)
                reply = workers[name].ask(cmd="run", kind=kind, repeat=1)
                rows.setdefault((name, kind), []).extend(reply["times"])
                tokens.setdefault(name, reply["tokens"])          # the first pass's outputs
        for name, kind in plan:
            if kind != "greedy":
                rows[(name, kind)] = workers[name].ask(cmd="run", kind=kind, repeat=args.repeat)["times"]
    finally:
        for w in workers.values():
            w.close()

    print(f"config {args.config}: V={cfg['V']} E={cfg['E']} H={cfg['H']} L={cfg['L']}, batches of "
          f"{cfg['B']} sources of up to {cfg['S']} tokens, outputs up to {args.max_len} tokens, "
          f"{args.threads} threads")
    print(f"{'framework':<10} {'search':<8} {'median batch':>13} {'sentences/s':>12}")
    results = {"config": args.config, "max_len": args.max_len, "threads": args.threads,
               "settle_s": args.settle, "rows": []}
    for (name, kind), times in rows.items():
        med = statistics.median(times)
        print(f"{name:<10} {kind:<8} {med * 1e3:>11.1f}ms {cfg['B'] / med:>12.1f}")
        results["rows"].append({"framework": name, "search": kind, "median_batch_s": med,
                                "sentences_per_s": cfg["B"] / med})
    if "torch" in tokens:
        agree = same_tokens(tokens["minis2s"], tokens["torch"])
        ratio = statistics.median(rows[("minis2s", "greedy")]) / statistics.median(rows[("torch", "greedy")])
        print(f"greedy minis2s / PyTorch time {ratio:.3f}; same greedy output for "
              f"{100 * agree:.1f}% of the sentences")
        results.update(greedy_ratio=ratio, greedy_agreement=agree)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
