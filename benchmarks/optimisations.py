"""What each optimisation buys: the minis2s training step with one fast path taken back out.
(Speed only; ``benchmarks/ablations.py`` is about what model choices do to accuracy.)

    python benchmarks/optimisations.py --config medium --repeat 3 [--steps 5] [--warmup 2]
                                       [--threads N] [--json FILE]
    python benchmarks/optimisations.py --config tiny --repeat 1 --steps 2   # seconds

Every fast path of ``grad`` is a fused function with a composed reference twin
(``grad/modes.py``), so taking one out is a switch, not a hand-made revert:
``grad.reference_mode(only={name})`` runs that function's reference and keeps every other one
fast. The variants, each the benchmark's step (``benchmarks/train_step.py``'s minis2s worker:
same model, weights, batches, loss, backward, clipping at 5, Adam; minis2s alone, as
``train_step.py --no-torch``):

* the fast code with ``--malloc tuned`` (the baseline) and with ``--malloc default``;
* full reference mode (``grad.reference_mode()``: every fused function on its reference, and the
  model's own fast layouts that ask ``grad.is_reference_mode()`` too, such as the decoder's split
  input weight and its all-steps embedding product), and every fused function on its reference
  with the model's layout kept fast (``reference_mode(only=<all of them>)``): the difference of
  the two is what the layout buys;
* each fused function that the fast step enters, alone on its reference. ``accumulate`` goes
  with the functions that need its fast twin (``grad.modes.requirers``: their factored and sparse
  gradients), so its row takes out the lazy gradient sums as a whole.

"Cost of removing it" is the variant's median minus the baseline's. Each variant runs in a fresh
worker process (so its peak memory is its own) with no other worker alive, one after the other;
one run times every variant once, the order rotated from run to run so that slow drift of the
machine does not always favour the same variant. A run's figure is the median of its ``--steps``
timed steps after ``--warmup``; the table shows the median over the ``--repeat`` runs and every
run's figure.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)
import train_step  # noqa: E402  (its minis2s worker and model construction)

BASELINE = "fast code, --malloc tuned"


def worker(args) -> None:
    """The minis2s worker of ``train_step.py``, run inside the variant's reference setting."""
    import grad
    import minis2s.models  # noqa: F401  (registers the models' fused functions, e.g. their
    #                        inference paths, so that every name the parent lists resolves)
    if args.reference == "none":
        mode = contextlib.nullcontext()
    elif args.reference == "all":
        mode = grad.reference_mode()
    else:
        mode = grad.reference_mode(only=args.reference.split(","))
    with mode:
        train_step.minis2s_worker(args)


def variants(used: list[str]) -> list[dict]:
    """The variants measured after the baseline, given the fused functions the fast step enters."""
    from grad.modes import fused_functions, requirers
    rows = [{"name": "fast code, --malloc default", "reference": "none", "malloc": "default"},
            {"name": "full reference mode", "reference": "all", "malloc": "tuned"},
            {"name": "every fused function on its reference, the model's layout fast",
             "reference": ",".join(f.__name__ for f in fused_functions()), "malloc": "tuned"}]
    for name in used:
        with_it = [n for n in requirers(name) if n != name]       # all swapped, the used ones named
        label = f"{name} on its reference"
        if [n for n in with_it if n in used]:
            label += f" (with {', '.join(n for n in with_it if n in used)})"
        rows.append({"name": label, "reference": ",".join([name] + with_it), "malloc": "tuned",
                     "function": name})
    return rows


def run_variant(script: str, variant: dict, wargs: list[str], args, used: list[str] | None,
                check: bool) -> dict:
    """One variant in its own worker, alone: warm-up, timed steps, peak memory. With ``check``,
    one more (untimed, traced) step shows which fast twins the variant runs (kept as
    ``variant["fast_entered"]``): every one it does not swap and none it swaps (a reference may
    call another fast twin, as ``attention_lookup_reference`` calls ``softmax``), or the run
    stops: the variant would not be what its name says. ``used`` None: the baseline's first
    run, whose traced step tells which fused functions the step enters."""
    w = common.Worker(script, "minis2s", wargs + ["--reference", variant["reference"],
                                                  "--malloc", variant["malloc"]], args.threads)
    try:
        first = w.ask(cmd="run", n=max(1, args.warmup))["losses"][0]     # before any update
        r = w.ask(cmd="run", n=args.steps)
        memory = w.ask(cmd="memory")
        if check:
            entered = w.ask(cmd="fused")
            variant["fast_entered"], variant["describe"] = entered, w.ask(cmd="describe")
            used = entered if used is None else used
            swapped = (set(used) if variant["reference"] == "all" else
                       set() if variant["reference"] == "none" else set(variant["reference"].split(",")))
            if set(entered) & swapped or not set(used) - swapped <= set(entered):
                raise RuntimeError(f"variant {variant['name']!r} entered the fast {entered}: "
                                   f"expected {sorted(set(used) - swapped)} and none of "
                                   f"{sorted(swapped)}")
    finally:
        w.close()
    return {"median_s": statistics.median(r["times"]), "times": r["times"],
            "first_loss": first, "peak_memory_mb": memory["peak"] - memory["base"],
            "allocator": w.hello["allocator"]}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["lstm", "transformer"], default="lstm",
                        help="the model (default lstm: the seq2seq of docs/performance.md)")
    parser.add_argument("--config", default="medium",
                        help="sizes (lstm: tiny|small|medium, default medium; transformer: tiny|base)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant and run (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of every variant (default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="BLAS threads (default: all cores)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--reference", default="none", help=argparse.SUPPRESS)   # a worker's variant
    common.add_worker_arguments(parser)
    parser.add_argument("--malloc", choices=["tuned", "default"], help=argparse.SUPPRESS)  # a worker's
    args = parser.parse_args(argv)
    args.device = "cpu"
    args.adam = "flat"        # the default Adam; its per-parameter loop is the adam_step variant
    configs = common.CONFIGS if args.arch == "lstm" else common.TRANSFORMER_CONFIGS
    if args.config not in configs:
        parser.error(f"argument --config: {args.config!r} is not a {args.arch} configuration "
                     f"(choose from {', '.join(sorted(configs))})")
    if common.run_worker(args, worker, None):
        return 0
    if args.malloc is not None or args.reference != "none":
        parser.error("--malloc and --reference are set per variant by the script itself "
                     "(it measures both allocators and every reference setting)")
    if args.steps < 1 or args.repeat < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--steps, --repeat and --threads must be positive, --warmup not negative")

    cfg = configs[args.config]
    script = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory(prefix="minis2s-opt-") as tmp:
        weights = os.path.join(tmp, "weights.npz")
        common.save_weights(train_step.build_minis2s(args.arch, cfg), weights)
        wargs = ["--arch", args.arch, "--config", args.config, "--weights", weights]
        base = {"name": BASELINE, "reference": "none", "malloc": "tuned"}
        print(f"{args.arch} config {args.config}, {args.threads} threads", flush=True)
        opening = run_variant(script, base, wargs, args, None, check=True)  # run 1's baseline
        used = base["fast_entered"]
        print(f"fused functions the step enters: {', '.join(used)}", flush=True)
        rows = [base] + variants(used)
        for row in rows:
            row["runs"] = []
        for r in range(args.repeat):
            shift = r % len(rows)
            for row in rows[shift:] + rows[:shift]:
                if r == 0 and row is base:
                    result = opening
                else:
                    result = run_variant(script, row, wargs, args, used, check=r == 0)
                row["runs"].append(result)
                print(f"  run {r + 1}: {row['name']:<60} {result['median_s'] * 1e3:9.1f} ms "
                      f"{result['peak_memory_mb']:8.1f} MB", flush=True)

    for row in rows:
        row["median_s"] = statistics.median(x["median_s"] for x in row["runs"])
        row["peak_memory_mb"] = statistics.median(x["peak_memory_mb"] for x in row["runs"])
    first = [x["first_loss"] for row in rows for x in row["runs"]]
    spread = (max(first) - min(first)) / abs(base["runs"][0]["first_loss"])
    for row in rows[1:]:
        row["cost_s"] = row["median_s"] - base["median_s"]
        row["cost_mb"] = row["peak_memory_mb"] - base["peak_memory_mb"]
    results = {"arch": args.arch, "config": args.config, "sizes": cfg, "threads": args.threads,
               "steps": args.steps, "warmup": args.warmup, "repeat": args.repeat,
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "cpu": cpu_name(), "machine": base["describe"], "fused_used": used,
               "first_loss_spread": spread, "variants": rows}
    print()
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def report(r: dict) -> str:
    """The table for docs/performance.md, with the setup it was measured on."""
    kernels = ", ".join(f"{b['library']} {b['kernel']} threads={b['threads']}" for b in r["machine"]["blas"])
    lines = [f"{r['date']}; {r['cpu']}; {kernels}; {r['arch']} {r['config']}; median of "
             f"{r['repeat']} run(s) of {r['steps']} timed steps after {r['warmup']} warm-up", "",
             "| variant | step (ms): median (each run) | peak MB | cost of removing it |",
             "|---|---|---|---|"]
    for row in r["variants"]:
        runs = ", ".join(f"{x['median_s'] * 1e3:.1f}" for x in row["runs"])
        cost = "" if "cost_s" not in row else f"{row['cost_s'] * 1e3:+.1f} ms, {row['cost_mb']:+.1f} MB"
        lines.append(f"| {row['name']} | {row['median_s'] * 1e3:.1f} ({runs}) | "
                     f"{row['peak_memory_mb']:.1f} | {cost} |")
    lines.append("")
    lines.append(f"first loss of every variant and run within {r['first_loss_spread']:.1e} "
                 f"(relative) of each other" + ("" if r["first_loss_spread"] < 1e-5 else
                                                " -- MORE THAN 1e-5: the variants differ"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
