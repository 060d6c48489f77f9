"""One seq2seq training step, minis2s against the same model in PyTorch, and against the GEMM floor.

    python benchmarks/train_step.py --config tiny|small|medium [--device cpu|cuda]
                                    [--steps 20] [--warmup 3] [--threads N] [--json FILE]
    python benchmarks/train_step.py --arch transformer [--config tiny|base] [...]
    python benchmarks/train_step.py --arch lm [--config tiny|small|medium] [...]

``--arch lstm`` (the default) is the LSTM seq2seq with Luong attention; ``--arch transformer``
is minis2s's ``TransformerSeq2Seq`` against the same model built from PyTorch's own
Transformer layers (common.TRANSFORMER_CONFIGS; its default config is ``base``, issue 20's);
``--arch lm`` is the LSTM language model of ``minis2s lm train`` and its own training step
(``minis2s.lm.training.train_step``) against ``nn.Embedding`` + ``nn.LSTM`` + ``nn.Linear``
(common.LM_CONFIGS).

Each framework runs in its own subprocess (so neither's threads steal the cores from the other
and each one's memory is its own). The parent alternates them in blocks of steps, so slow drift
of the machine touches both; before each turn it waits ``--settle`` seconds (default 1), so
that the threads of the worker whose turn just ended (OpenBLAS's and OpenMP's spin a while before
they sleep) no longer compete for the cores. Both load the same weights and the same random batches; the loss of
their first step is printed side by side as a check that they compute the same model.

Printed: median step time with its spread (25th-75th percentile, min-max), target tokens per
second, peak memory (increase of the resident set over the memory in use right after imports),
the ratio minis2s / PyTorch, and the "GEMM floor": the time plain NumPy matrix products of the
step's shapes take, forward and backward, which no NumPy implementation can beat.
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


# ============================================================================ GEMM floor
def gemm_shapes(cfg: dict) -> list[tuple[int, tuple, tuple]]:
    """Every matrix product of one training step as ``(count, shape_a, shape_b)``, forward and
    backward, in the shapes minis2s runs them. A linear map ``y = x W^T`` applied at ``steps``
    time steps to ``(m, k)`` rows costs, per step, ``x W^T`` and ``g W``; its weight gradient
    ``sum_t g_t^T x_t`` is one product with an inner dimension of ``steps * m`` (the factored
    gradient of ``grad.accumulate.MatmulGrad``), the fastest way to form the same sum."""
    b, s, t, e, h, v, n_layers = (cfg[k] for k in ("B", "S", "T", "E", "H", "V", "L"))
    t = t - 1                                   # decoder steps: the target without its last token
    shapes = []

    def linear(steps, m, k, n):                 # (m, k) @ (k, n) at each step, and its gradients
        shapes.extend([(steps, (m, k), (k, n)), (steps, (m, n), (n, k)),
                       (1, (n, steps * m), (steps * m, k))])

    half = h // 2
    for layer in range(n_layers):               # encoder: two directions per layer
        n_in = e if layer == 0 else h
        for _ in range(2):
            linear(1, s * b, n_in, 4 * half)    # input projection of all steps
            linear(s, b, half, 4 * half)        # h W_hh, one per step
    linear(1, t * b, e, 4 * h)                  # decoder: embedding half of layer 0, all steps
    linear(t, b, h, 4 * h)                      # input feeding half of layer 0
    linear(t, b, h, 4 * h)                      # layer 0 recurrence
    for _ in range(1, n_layers):
        linear(t, b, h, 4 * h)                  # input of layer k
        linear(t, b, h, 4 * h)                  # recurrence of layer k
    linear(t, b, h, h)                          # attention query W_a h
    linear(t, b, h, h)                          # W_c [h; context] as W_ch h + W_cc context
    linear(t, b, h, h)
    # scores = memory q and context = a memory: batched, per step; their gradients per step, and
    # the encoder-output gradient of all steps as one batched product (B, S, 2T) @ (B, 2T, H)
    shapes.extend([(2 * t, (b, s, h), (b, h, 1)), (2 * t, (b, 1, s), (b, s, h)),
                   (1, (b, s, 2 * t), (b, 2 * t, h))])
    linear(1, t * b, h, v)                      # the generator, all steps
    return shapes


def transformer_gemm_shapes(cfg: dict) -> list[tuple[int, tuple, tuple]]:
    """The matrix products of one Transformer training step, forward and backward, as
    ``gemm_shapes``. With ``n = B*S`` source and ``m = B*(T-1)`` target positions, ``d`` model
    width, ``f`` feed-forward width, ``h`` heads, ``L`` layers per stack, the forward FLOPs are::

        encoder layer: 2n(3d^2 + d^2 + 2df)            in_proj, out_proj, FFN
                       + 2 * 2 B S^2 d                  scores Q K^T and weights @ V (all heads)
        decoder layer: 2m(3d^2 + d^2 + 2df)            self-attention projections, FFN
                       + 2 * 2 B (T-1)^2 d              causal scores and values (full square)
                       + 2m(d^2 + d^2) + 2n(2d^2)       cross: query, out_proj; keys and values
                       + 2 * 2 B (T-1) S d              cross scores and values
        generator:     2 m d V

    and backward is twice that (each product ``a @ b`` has the gradients ``g @ b^T`` and
    ``a^T @ g``): the step is 3x the forward. The embeddings are row gathers, not products."""
    b, s, t, d, f, h, v, n_layers = (cfg[k] for k in ("B", "S", "T", "D", "F", "NH", "V", "L"))
    t = t - 1                                   # decoder positions: the target without its last token
    dh = d // h
    shapes = []

    def linear(rows, k, n):                     # (rows, k) @ (k, n), input and weight gradients
        shapes.extend([(1, (rows, k), (k, n)), (1, (rows, n), (n, k)), (1, (n, rows), (rows, k))])

    def bmm(m, k, n):                           # (B*h, m, k) @ (B*h, k, n) and its two gradients
        shapes.extend([(1, (b * h, m, k), (b * h, k, n)), (1, (b * h, m, n), (b * h, n, k)),
                       (1, (b * h, k, m), (b * h, m, n))])

    def attention(q_len, k_len):                # scores Q K^T, then weights @ V
        bmm(q_len, dh, k_len)
        bmm(q_len, k_len, dh)

    def feed_forward(rows):
        linear(rows, d, f)
        linear(rows, f, d)

    for _ in range(n_layers):                   # encoder
        linear(b * s, d, 3 * d)                 # in_proj: queries, keys, values
        attention(s, s)
        linear(b * s, d, d)                     # out_proj
        feed_forward(b * s)
    for _ in range(n_layers):                   # decoder
        linear(b * t, d, 3 * d)                 # self-attention in_proj
        attention(t, t)
        linear(b * t, d, d)
        linear(b * t, d, d)                     # cross-attention: queries from the target
        linear(b * s, d, 2 * d)                 # keys and values from the memory
        attention(t, s)
        linear(b * t, d, d)
        feed_forward(b * t)
    linear(b * t, d, v)                         # the generator
    return shapes


def lm_gemm_shapes(cfg: dict, generator: bool = True) -> list[tuple[int, tuple, tuple]]:
    """The matrix products of one LSTM language-model training step, forward and backward, as
    ``gemm_shapes``. With ``n = B*(T-1)`` positions (T counts BOS and EOS), embedding ``E``,
    hidden ``H``, ``L`` layers and vocabulary ``V``, the forward FLOPs are::

        layer 0:        2n E 4H   +  2n H 4H       input projection of all steps, recurrence
        layer k >= 1:   2n H 4H   +  2n H 4H
        generator:      2n H V

    and backward is twice that (input and weight gradient of each product): the step is 3x the
    forward. The input projection and the generator run once over all positions; the recurrence
    ``h W_hh^T`` runs once per step on ``(B, H)`` rows, its input gradient likewise, its weight
    gradient as one product with an inner dimension of ``n``. The embedding is a row gather.
    ``generator=False``: the LSTM stack's products only (``benchmarks/lstm_stack.py``)."""
    b, t, e, h, v, n_layers = (cfg[k] for k in ("B", "T", "E", "H", "V", "L"))
    t = t - 1                                   # positions: the sentence without its last token
    shapes = []

    def linear(steps, m, k, n):                 # as in gemm_shapes
        shapes.extend([(steps, (m, k), (k, n)), (steps, (m, n), (n, k)),
                       (1, (n, steps * m), (steps * m, k))])

    for layer in range(n_layers):
        linear(1, t * b, e if layer == 0 else h, 4 * h)   # input projection, all steps
        linear(t, b, h, 4 * h)                             # recurrence, one product per step
    if generator:
        linear(1, t * b, h, v)                             # the generator, all steps
    return shapes


def gemm_flops(shapes) -> float:
    total = 0.0
    for count, a, bb in shapes:
        batch = a[0] if len(a) == 3 else 1
        m, k = a[-2], a[-1]
        n = bb[-1]
        total += count * 2.0 * batch * m * k * n
    return total


def time_gemm_floor(shapes, repeat: int = 7) -> float:
    """Seconds that NumPy's matmul takes for all the shapes (median of ``repeat`` per shape)."""
    import numpy as np
    rng = np.random.default_rng(0)
    total = 0.0
    for count, a_shape, b_shape in shapes:
        a = rng.standard_normal(a_shape, dtype=np.float32)
        b = rng.standard_normal(b_shape, dtype=np.float32)
        np.matmul(a, b)
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            np.matmul(a, b)
            samples.append(time.perf_counter() - t0)
        total += count * statistics.median(samples)
    return total


# ============================================================================ workers
ARCH_CONFIGS = {"lstm": common.CONFIGS, "transformer": common.TRANSFORMER_CONFIGS,
                "lm": common.LM_CONFIGS}
DEFAULT_CONFIG = {"lstm": "tiny", "transformer": "base", "lm": "tiny"}


def arch_config(args) -> dict:
    return ARCH_CONFIGS[args.arch][args.config]


def build_minis2s(arch: str, cfg: dict):
    return {"lstm": common.build_minis2s, "transformer": common.build_minis2s_transformer,
            "lm": common.build_minis2s_lm}[arch](cfg)


def target_tokens(arch: str, cfg: dict) -> float:
    """Predicted tokens of the mean batch (the throughput's numerator)."""
    data = common.make_lm_batches(cfg) if arch == "lm" else common.make_batches(cfg)
    return sum(d["n_tokens"] for d in data) / len(data)


def step_shapes(arch: str, cfg: dict):
    return {"lstm": gemm_shapes, "transformer": transformer_gemm_shapes, "lm": lm_gemm_shapes}[arch](cfg)


def minis2s_worker(args) -> None:
    import grad                                  # noqa: F401
    from grad import backend as B
    from grad.optim import Adam
    from minis2s.models import Seq2Seq           # noqa: F401
    if args.device == "cuda":
        B.use("cupy")
    allocator = common.set_allocator(args.malloc)
    base = common.memory_mb()["rss"]
    cfg = arch_config(args)
    model = build_minis2s(args.arch, cfg)
    model.load_state_dict({k: B.from_numpy(v) for k, v in
                           common.np.load(args.weights, allow_pickle=False).items()})
    model.train()
    params = list(model.parameters())
    optimizer = Adam(params, lr=common.LM_LR if args.arch == "lm" else 1e-3, flat=args.adam == "flat")
    if args.arch == "lm":          # host batches, as minis2s lm train hands them to train_step
        batches = common.make_lm_batches(cfg)
    else:
        batches = common.minis2s_batches(cfg)
    sync = (lambda: B.xp.cuda.Device().synchronize()) if args.device == "cuda" else (lambda: None)
    position = [0]

    def step() -> float:
        batch = batches[position[0] % len(batches)]
        position[0] += 1
        if args.arch == "lm":
            return common.minis2s_lm_step(model, optimizer, batch)
        return common.minis2s_step(model, params, optimizer, batch).item()

    def run(n):
        times, losses = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            loss = step()
            sync()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss))
        return {"times": times, "losses": losses}

    def floor():
        shapes = step_shapes(args.arch, cfg)
        return {"flops": gemm_flops(shapes), "seconds": time_gemm_floor(shapes)}

    common.serve({"run": run, "memory": lambda: {**common.memory_mb(), "base": base},
                  "floor": floor, "fused": lambda: common.fused_entered(step)},
                 {"framework": "minis2s", "backend": B.name(), "blas": common.blas_info(),
                  "allocator": allocator})


def torch_worker(args) -> None:
    import torch
    allocator = common.set_allocator(args.malloc)
    base = common.memory_mb()["rss"]
    cfg = arch_config(args)
    device = args.device
    model = {"lstm": common.torch_model, "transformer": common.torch_transformer,
             "lm": common.torch_lm}[args.arch](cfg, args.weights, device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=common.LM_LR if args.arch == "lm" else 1e-3)
    if args.arch == "lm":
        batches = [torch.from_numpy(d["ids"]).to(device) for d in common.make_lm_batches(cfg)]
        one_step = common.torch_lm_step
    else:
        batches = common.torch_batches(cfg, device)
        one_step = common.torch_step
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    position = [0]

    def run(n):
        times, losses = [], []
        for _ in range(n):
            batch = batches[position[0] % len(batches)]
            position[0] += 1
            t0 = time.perf_counter()
            loss = one_step(model, optimizer, batch)
            sync()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.item()))
        return {"times": times, "losses": losses}

    common.serve({"run": run, "memory": lambda: {**common.memory_mb(), "base": base}},
                 {"framework": "torch", "version": torch.__version__, "threads": torch.get_num_threads(),
                  "allocator": allocator})


# ============================================================================ the parent
def summarize(times, n_tokens) -> dict:
    med = statistics.median(times)
    return {"median_s": med, "p25_s": common.percentile(times, 25), "p75_s": common.percentile(times, 75),
            "min_s": min(times), "max_s": max(times), "steps": len(times),
            "tokens_per_s": n_tokens / med}


def solo_run(script, framework, wargs, args) -> dict:
    """One framework alone: its own worker, warm-up and timed steps, no other worker alive."""
    n_tokens = target_tokens(args.arch, arch_config(args))
    worker = common.Worker(script, framework, wargs, args.threads)
    try:
        worker.ask(cmd="run", n=max(1, args.warmup))
        times = worker.ask(cmd="run", n=args.steps)["times"]
        memory = worker.ask(cmd="memory")
    finally:
        worker.close()
    r = summarize(times, n_tokens)
    r["peak_memory_mb"] = memory["peak"] - memory["base"]
    return r


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["lstm", "transformer", "lm"], default="lstm",
                        help="the model: LSTM seq2seq with attention (default), Transformer "
                             "seq2seq, or the LSTM language model")
    parser.add_argument("--config", choices=sorted(set().union(*ARCH_CONFIGS.values())),
                        help="sizes (lstm: tiny|small|medium, default tiny; transformer: tiny|base, "
                             "default base: d_model 256, 4 heads, ff 1024, 3+3 layers, B=64, S=T=30, "
                             "V=8000; lm: tiny|small|medium, default tiny)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per framework (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--block", type=int, default=5, help="steps per turn when alternating")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds of pause before each turn when alternating, so that the "
                             "threads of the worker whose turn just ended have gone idle "
                             "(default 1.0)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="BLAS / PyTorch threads (default: all cores)")
    parser.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                        help="host allocator of BOTH workers: 'tuned' keeps freed memory for reuse "
                             "(grad.backend.tune_host_allocator, what the minis2s trainer does), "
                             "'default' is the C library's own policy (default: tuned)")
    parser.add_argument("--adam", choices=["flat", "per-parameter"], default="flat",
                        help="minis2s's Adam: over one flat parameter buffer (grad.optim.Adam's "
                             "default) or parameter by parameter (flat=False) (default: flat)")
    parser.add_argument("--no-torch", action="store_true", help="time minis2s only")
    parser.add_argument("--solo", action="store_true",
                        help="also time each framework alone, in turn, with no other worker alive "
                             "(reported beside the alternated figures)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    common.add_worker_arguments(parser)
    args = parser.parse_args(argv)
    configs = ARCH_CONFIGS[args.arch]
    if args.config is None:
        args.config = DEFAULT_CONFIG[args.arch]
    if args.config not in configs:
        parser.error(f"argument --config: {args.config!r} is not a {args.arch} configuration "
                     f"(choose from {', '.join(sorted(configs))})")
    if common.run_worker(args, minis2s_worker, torch_worker):
        return 0
    if args.steps < 1 or args.block < 1 or args.warmup < 0 or args.threads < 1 or args.settle < 0:
        parser.error("--steps, --block and --threads must be positive, --warmup and --settle "
                     "not negative")

    cfg = configs[args.config]
    have_torch = False
    if not args.no_torch:
        try:
            import importlib.util
            have_torch = importlib.util.find_spec("torch") is not None
        except ValueError:
            have_torch = False
    tmp = tempfile.mkdtemp(prefix="minis2s-bench-")
    weights = os.path.join(tmp, "weights.npz")
    common.save_weights(build_minis2s(args.arch, cfg), weights)
    n_tokens = target_tokens(args.arch, cfg)                                # mean per batch

    script = os.path.abspath(__file__)
    wargs = ["--arch", args.arch, "--config", args.config, "--device", args.device, "--weights", weights,
             "--malloc", args.malloc, "--adam", args.adam]
    workers = [common.Worker(script, "minis2s", wargs, args.threads)]
    if have_torch:
        workers.append(common.Worker(script, "torch", wargs, args.threads))
    times = {w.framework: [] for w in workers}
    losses = {w.framework: [] for w in workers}
    try:
        for w in workers:
            first = w.ask(cmd="run", n=max(1, args.warmup))
            losses[w.framework] = first["losses"]
        turn = 0
        while min(len(v) for v in times.values()) < args.steps:
            order = workers if turn % 2 == 0 else workers[::-1]
            for w in order:
                n = min(args.block, args.steps - len(times[w.framework]))
                if n > 0:
                    if len(workers) > 1:
                        time.sleep(args.settle)     # the other worker's threads go idle first
                    times[w.framework] += w.ask(cmd="run", n=n)["times"]
            turn += 1
        memory = {w.framework: w.ask(cmd="memory") for w in workers}
        floor = workers[0].ask(cmd="floor") if args.device == "cpu" else None
        hello = {w.framework: w.hello for w in workers}
    finally:
        for w in workers:
            w.close()

    results = {"arch": args.arch, "config": args.config, "sizes": cfg, "device": args.device, "threads": args.threads,
               "malloc": args.malloc, "adam": args.adam, "block": args.block, "settle_s": args.settle,
               "target_tokens_per_step": n_tokens, "workers": hello, "frameworks": {}}
    for name in times:
        r = summarize(times[name], n_tokens)
        m = memory[name]
        r["peak_memory_mb"] = m["peak"] - m["base"]
        r["first_loss"] = losses[name][0]
        results["frameworks"][name] = r
    if args.solo:
        results["solo"] = {name: solo_run(script, name, wargs, args) for name in times}
    ours = results["frameworks"]["minis2s"]
    if "torch" in results["frameworks"]:
        results["ratio_time"] = ours["median_s"] / results["frameworks"]["torch"]["median_s"]
        results["ratio_memory"] = ours["peak_memory_mb"] / results["frameworks"]["torch"]["peak_memory_mb"]
        if args.solo:
            results["solo_ratio_time"] = (results["solo"]["minis2s"]["median_s"]
                                          / results["solo"]["torch"]["median_s"])
    if floor is not None:
        results["gemm_flops"] = floor["flops"]
        results["gemm_floor_s"] = floor["seconds"]
        results["minis2s_over_floor"] = ours["median_s"] / floor["seconds"]
        if "torch" in results["frameworks"]:
            results["torch_over_floor"] = results["frameworks"]["torch"]["median_s"] / floor["seconds"]
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def report(r: dict) -> None:
    c = r["sizes"]
    if r["arch"] == "lstm":
        print(f"config {r['config']}: V={c['V']} E={c['E']} H={c['H']} L={c['L']} B={c['B']} "
              f"S={c['S']} T={c['T']}; device {r['device']}, {r['threads']} threads; "
              f"minis2s Adam {r.get('adam', 'flat')}")
    elif r["arch"] == "lm":
        print(f"LSTM language model config {r['config']}: V={c['V']} E={c['E']} H={c['H']} "
              f"L={c['L']} B={c['B']} T={c['T']}; device {r['device']}, {r['threads']} threads; "
              f"minis2s Adam {r.get('adam', 'flat')}")
    else:
        print(f"transformer config {r['config']}: V={c['V']} d_model={c['D']} heads={c['NH']} "
              f"ff={c['F']} layers={c['L']}+{c['L']} B={c['B']} S={c['S']} T={c['T']}; "
              f"device {r['device']}, {r['threads']} threads; minis2s Adam {r.get('adam', 'flat')}")
    for name, info in r["workers"].items():
        print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in info.items() if k != "framework"))
    print(f"{'framework':<10} {'median':>9} {'p25-p75':>17} {'min-max':>17} {'tokens/s':>9} "
          f"{'peak MB':>8} {'first loss':>11}")
    for name, f in r["frameworks"].items():
        print(f"{name:<10} {f['median_s'] * 1e3:>7.1f}ms {f['p25_s'] * 1e3:>7.1f}-{f['p75_s'] * 1e3:<7.1f}ms "
              f"{f['min_s'] * 1e3:>7.1f}-{f['max_s'] * 1e3:<7.1f}ms {f['tokens_per_s']:>9.0f} "
              f"{f['peak_memory_mb']:>8.1f} {f['first_loss']:>11.6f}")
    if "ratio_time" in r:
        print(f"minis2s / PyTorch: time {r['ratio_time']:.3f}, peak memory {r['ratio_memory']:.3f}")
    if "solo" in r:
        for name, f in r["solo"].items():
            print(f"{name:<10} solo {f['median_s'] * 1e3:>7.1f}ms  (p25-p75 {f['p25_s'] * 1e3:.1f}-"
                  f"{f['p75_s'] * 1e3:.1f}ms, peak {f['peak_memory_mb']:.1f} MB); alternated "
                  f"{r['frameworks'][name]['median_s'] * 1e3:.1f}ms "
                  f"({r['frameworks'][name]['median_s'] / f['median_s']:.3f}x solo)")
        if "solo_ratio_time" in r:
            print(f"minis2s / PyTorch, solo: time {r['solo_ratio_time']:.3f}")
    if "gemm_floor_s" in r:
        line = (f"GEMM floor: {r['gemm_flops'] / 1e9:.1f} GFLOP of matrix products take "
                f"{r['gemm_floor_s'] * 1e3:.1f} ms in plain NumPy "
                f"({r['gemm_flops'] / r['gemm_floor_s'] / 1e9:.1f} GFLOP/s); "
                f"minis2s step / floor {r['minis2s_over_floor']:.2f}")
        if "torch_over_floor" in r:
            line += f", PyTorch step / floor {r['torch_over_floor']:.2f}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
