"""Where the time of one minis2s training step goes: cProfile per function, the GEMM floor and
the graph's node count.

    python benchmarks/profile_step.py --config medium [--arch lstm|transformer|lm] [--steps 4]
                                      [--warmup 2] [--threads N] [--malloc tuned|default]
                                      [--top 15] [--json FILE]

The step is the benchmark's (``benchmarks/train_step.py``: same model, weights, batches, loss,
backward, clipping at 5, Adam; ``common.minis2s_step``, or ``common.minis2s_lm_step`` for the
language model: flat Adam, host batches), run in this process with the thread
count set by ``grad.backend.set_num_threads`` and the allocator policy of ``--malloc``, as the
benchmark's minis2s worker does. Printed:

* the step time without the profiler (median of ``--steps``), then with it (its overhead shows);
* per fused function the step enters (``grad.modes.fused_functions()``), its forward (the fused
  function itself) and its backward (the ``backward`` defined inside it), in ms per step and
  calls per step; then the lazy gradient sums (``grad.accumulate``'s ``dense``), the whole
  forward (``loss``), the backward sweep (``Tensor.backward``), ``clip_grad_norm_`` and
  ``Adam.step``. Times are cProfile's cumulative times, so a row includes what it calls (a
  fused function that calls another, such as ``lstm_cell`` calling ``linear``, includes it);
* the functions with the most time of their own (cProfile's ``tottime``). cProfile does not
  see NumPy's ufuncs (``matmul``, ``tanh``, the arithmetic operators), only C functions and
  methods, so the time of those is counted in the Python function that calls them: a fused
  function's own time is its matrix products and elementwise passes;
* the GEMM floor of the configuration (``train_step.gemm_shapes``: plain NumPy matrix products
  of the step's shapes) and the number of graph nodes one step records, by op.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)
import train_step  # noqa: E402  (model construction, GEMM floor)


def count_nodes(root) -> dict:
    """Graph nodes behind ``root`` (ops, not leaves), by op name."""
    seen, todo, counts = set(), [root], {}
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node._op:
            counts[node._op] = counts.get(node._op, 0) + 1
        todo.extend(node._parents)
    return counts


def _nested(code):
    """``code`` and the code objects defined inside it (its backward, its lambdas)."""
    found = [code]
    for const in code.co_consts:
        if hasattr(const, "co_consts"):
            found += _nested(const)
    return found


def _key(code) -> tuple:
    return (code.co_filename, code.co_firstlineno, code.co_name)


def profile_rows(stats: dict, steps: int, used: list[str], loss_code) -> list[dict]:
    """The table's rows from cProfile's raw ``stats`` ({(file, line, name): (cc, nc, tt, ct, callers)})."""
    import grad
    from grad import accumulate, modes, optim
    from grad.nn import utils

    def row(label, codes):
        found = [stats[_key(c)] for c in codes if _key(c) in stats]
        return {"function": label, "ms_per_step": 1e3 * sum(s[3] for s in found) / steps,
                "calls_per_step": sum(s[1] for s in found) / steps}

    rows = []
    for fast in modes.fused_functions():
        if fast.__name__ not in used:
            continue
        where = f"{fast.__module__}.{fast.__name__}"
        backward = [c for c in _nested(fast.__code__)[1:] if c.co_name == "backward"]
        rows.append(row(f"{where}, forward" if backward else where, [fast.__code__]))
        if backward:
            rows.append(row(f"{where}, backward", backward))
    for cls in (accumulate.MatmulGrad, accumulate.OuterGrad, accumulate.SliceGrad):
        rows.append(row(f"grad.accumulate.{cls.__name__}.dense", [cls.dense.__code__]))
    rows.append(row("the forward pass (model.loss)", [loss_code]))
    rows.append(row("the backward sweep (Tensor.backward)", [grad.Tensor.backward.__code__]))
    rows.append(row("grad.nn.utils.clip_grad_norm_", [utils.clip_grad_norm_.__code__]))
    rows.append(row("grad.optim.Adam.step", [optim.Adam.step.__code__]))
    return [r for r in rows if r["calls_per_step"] > 0]


def own_time(stats: dict, steps: int, top: int) -> list[dict]:
    """The ``top`` functions by time spent in themselves (not in what they call), per step."""
    ranked = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    out = []
    for (filename, line, name), (cc, nc, tt, ct, callers) in ranked:
        if filename == "~":                                 # a C function or method
            where = name
        else:
            inside = filename.startswith(str(common.ROOT))
            where = f"{os.path.relpath(filename, common.ROOT) if inside else os.path.basename(filename)}" \
                    f":{line}({name})"
        out.append({"function": where, "own_ms_per_step": 1e3 * tt / steps,
                    "calls_per_step": nc / steps})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["lstm", "transformer", "lm"], default="lstm")
    parser.add_argument("--config", default="medium",
                        help="sizes (lstm, lm: tiny|small|medium, default medium; transformer: tiny|base)")
    parser.add_argument("--steps", type=int, default=4, help="steps timed, then profiled (default 4)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS threads (default: all cores)")
    parser.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                        help="host allocator policy, as train_step.py's (default tuned)")
    parser.add_argument("--top", type=int, default=15, help="functions listed by own time (default 15)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    configs = train_step.ARCH_CONFIGS[args.arch]
    if args.config not in configs:
        parser.error(f"argument --config: {args.config!r} is not a {args.arch} configuration "
                     f"(choose from {', '.join(sorted(configs))})")
    if args.steps < 1 or args.warmup < 0 or args.threads < 1 or args.top < 0:
        parser.error("--steps and --threads must be positive, --warmup and --top not negative")

    allocator = common.set_allocator(args.malloc)
    common.set_threads("minis2s", args.threads)
    from grad.optim import Adam
    cfg = configs[args.config]
    model = train_step.build_minis2s(args.arch, cfg)
    model.train()
    params = list(model.parameters())
    lm = args.arch == "lm"
    # the benchmark's optimizer: flat Adam for the language model (train_step.py's default)
    optimizer = Adam(params, lr=common.LM_LR, flat=True) if lm else Adam(params, lr=1e-3)
    batches = common.make_lm_batches(cfg) if lm else common.minis2s_batches(cfg)
    position = [0]

    def step():
        batch = batches[position[0] % len(batches)]
        position[0] += 1
        if lm:
            return common.minis2s_lm_step(model, optimizer, batch)
        return common.minis2s_step(model, params, optimizer, batch)

    def record():                                          # the graph of one step's loss
        if lm:
            ids, lengths = batches[0]["ids"], batches[0]["lengths"]
            return model.loss(ids[:, :-1], ids[:, 1:], lengths - 1, reduction="sum")
        return model.loss(*batches[0])

    for _ in range(args.warmup):
        step()
    used = common.fused_entered(step)                      # one more untimed step, traced
    nodes = count_nodes(record())                          # the graph one step records
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for _ in range(args.steps):
        step()
    profiler.disable()
    profiled_s = (time.perf_counter() - t0) / args.steps
    stats = pstats.Stats(profiler).stats
    shapes = train_step.step_shapes(args.arch, cfg)
    floor_s = train_step.time_gemm_floor(shapes)

    results = {"arch": args.arch, "config": args.config, "sizes": cfg, "threads": args.threads,
               "allocator": allocator, "blas": common.blas_info(), "steps": args.steps,
               "step_s": statistics.median(times), "step_times": times, "profiled_step_s": profiled_s,
               "gemm_flops": train_step.gemm_flops(shapes), "gemm_floor_s": floor_s,
               "graph_nodes": sum(nodes.values()), "graph_nodes_by_op": nodes, "fused_used": used,
               "rows": profile_rows(stats, args.steps, used, type(model).loss.__code__),
               "own_time": own_time(stats, args.steps, args.top)}
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def report(r: dict) -> str:
    lines = [f"{r['arch']} config {r['config']}: {r['sizes']}; {r['threads']} threads; allocator "
             f"{r['allocator']}; {r['blas']}",
             f"step: {r['step_s'] * 1e3:.1f} ms (median of {r['steps']}), "
             f"{r['profiled_step_s'] * 1e3:.1f} ms under cProfile",
             f"GEMM floor: {r['gemm_flops'] / 1e9:.1f} GFLOP of matrix products take "
             f"{r['gemm_floor_s'] * 1e3:.1f} ms in plain NumPy; step / floor "
             f"{r['step_s'] / r['gemm_floor_s']:.2f}",
             f"graph: {r['graph_nodes']} nodes per step ("
             + ", ".join(f"{op} {n}" for op, n in sorted(r["graph_nodes_by_op"].items(),
                                                          key=lambda kv: -kv[1])[:8]) + ", ...)",
             "", "| function | ms per step (cProfile, cumulative) | calls per step |", "|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| `{row['function']}` | {row['ms_per_step']:.1f} | {row['calls_per_step']:g} |")
    lines += ["", "| function, by own time | own ms per step | calls per step |", "|---|---|---|"]
    for row in r["own_time"]:
        lines.append(f"| `{row['function']}` | {row['own_ms_per_step']:.1f} | {row['calls_per_step']:g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
