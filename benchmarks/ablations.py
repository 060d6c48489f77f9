"""Measured ablations: input feeding, attention kind, teacher-forcing ratio and a schedule, on three
built-in tasks, three seeds each, under one fixed protocol (docs/concepts.md, "Measured
ablations", states it and reads the results).

    python benchmarks/ablations.py                       # the protocol below: about 10 min of one core
    python benchmarks/ablations.py --plot-only           # redraw the figures from the saved JSON
    python benchmarks/ablations.py --tiny --out DIR      # seconds: what the test suite runs

Every run is ``minis2s.train.fit`` with the command's defaults except the settings named in
``PROTOCOL`` and the variant's own; the figures of a run are its per-epoch validation lines
(``log.jsonl``) and the test splits scored with the best checkpoint (lowest validation loss), as
``minis2s train`` does. Writes the JSON of all runs and the summary, prints the table, and draws
one figure per group of variants (validation exact match and loss per epoch, the mean over seeds
with the range shaded).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")      # one core per run, before NumPy loads
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # this repository's minis2s, not an installed one
    sys.path.insert(0, str(ROOT))

# The protocol, fixed before the runs. Model: the command's defaults (1 layer, dropout 0.1,
# Adam lr 2e-3, batch 64, clipping at 5) at a small size.
PROTOCOL = {
    "model": {"emb_size": 32, "hidden_size": 64},
    "seeds": [0, 1, 2],      # the seed draws the task's data, the initial weights and the batches
    "tasks": {
        "reverse": {"n_train": 3000, "n_valid": 300, "n_test": 300, "epochs": 8},   # + test-long
        "addition": {"n_train": 8000, "n_valid": 300, "n_test": 300, "epochs": 12},
        "dates": {"n_train": 2000, "n_valid": 300, "n_test": 300, "epochs": 5},
    },
    "variants": {            # name -> the settings that differ from the baseline
        "baseline": {},      # general attention, input feeding, tf_ratio 1.0
        "no input feeding": {"input_feeding": False},
        "dot attention": {"attention": "dot"},
        "no attention": {"attention": "none"},
        "tf_ratio 0.75": {"tf_ratio": 0.75},
        "tf_ratio 0.5": {"tf_ratio": 0.5},
        "tf linear 1.0 -> 0.5": {"tf_schedule": "linear", "tf_decay": 0.1, "tf_min": 0.5},
    },
    "groups": {              # one figure per group
        "input-feeding": ["baseline", "no input feeding"],
        "attention": ["baseline", "dot attention", "no attention"],
        "teacher-forcing": ["baseline", "tf_ratio 0.75", "tf_ratio 0.5", "tf linear 1.0 -> 0.5"],
    },
}

TINY = {**PROTOCOL, "seeds": [0, 1],
        "model": {"emb_size": 8, "hidden_size": 16},
        "tasks": {"reverse": {"n_train": 60, "n_valid": 20, "n_test": 20, "epochs": 2},
                  "dates": {"n_train": 60, "n_valid": 20, "n_test": 20, "epochs": 2}},
        "variants": {"baseline": {}, "no attention": {"attention": "none"},
                     "tf linear 1.0 -> 0.5": {"tf_schedule": "linear", "tf_decay": 0.5, "tf_min": 0.5}},
        "groups": {"attention": ["baseline", "no attention"],
                   "teacher-forcing": ["baseline", "tf linear 1.0 -> 0.5"]}}

METRICS = ("exact_match", "token_acc", "bleu", "loss", "ppl")


def run_one(task: str, sizes: dict, model: dict, variant: dict, seed: int, workdir: Path) -> dict:
    from minis2s.train import TrainConfig, fit
    sizes = dict(sizes)
    epochs = sizes.pop("epochs")
    out = workdir / f"{task}-{seed}-{abs(hash(json.dumps(variant, sort_keys=True)))}"
    cfg = TrainConfig(task=task, epochs=epochs, seed=seed, out=str(out), quiet=True, **sizes,
                      **model, **variant)
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = fit(cfg, log=lambda m: None)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    curves = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "curves": [{"epoch": r["epoch"], "train_loss": r["train_loss"],
                        "valid_loss": r["valid_loss"], "valid_exact_match": r["valid_exact_match"],
                        "valid_token_acc": r["valid_token_acc"]} for r in curves],
            "test": {name: {k: m[k] for k in METRICS} for name, m in result.items()
                     if name.startswith("test") and isinstance(m, dict)}}


def summarise(runs: list[dict]) -> dict:
    """{task: {variant: {split: {metric: {mean, sd, min, max}}}}} over the seeds."""
    table: dict = {}
    for r in runs:
        for split, metrics in r["test"].items():
            cell = table.setdefault(r["task"], {}).setdefault(r["variant"], {}).setdefault(split, {})
            for k, v in metrics.items():
                cell.setdefault(k, []).append(v)
    for task in table.values():
        for variant in task.values():
            for split in variant.values():
                for k, values in split.items():
                    split[k] = {"mean": statistics.fmean(values),
                                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                                "min": min(values), "max": max(values), "values": values}
    return table


def markdown_table(data: dict) -> str:
    """Test exact match (%) mean ± sd over the seeds [min-max], one column per task split."""
    summary, protocol = data["summary"], data["protocol"]
    columns = [(task, split) for task in protocol["tasks"] for split in
               sorted(summary[task][next(iter(summary[task]))], key=lambda s: (s != "test", s))]
    head = "| variant | " + " | ".join(f"{t} {s}" for t, s in columns) + " |"
    lines = [head, "|---|" + "---:|" * len(columns)]
    for variant in protocol["variants"]:
        cells = []
        for task, split in columns:
            m = summary[task][variant][split]["exact_match"]
            cells.append(f"{100 * m['mean']:.1f} ± {100 * m['sd']:.1f} "
                         f"[{100 * m['min']:.0f}-{100 * m['max']:.0f}]")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def loss_table(data: dict) -> str:
    """Test cross-entropy (nats per token) mean ± sd over the seeds."""
    summary, protocol = data["summary"], data["protocol"]
    columns = [(task, split) for task in protocol["tasks"] for split in
               sorted(summary[task][next(iter(summary[task]))], key=lambda s: (s != "test", s))]
    lines = ["| variant | " + " | ".join(f"{t} {s}" for t, s in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for variant in protocol["variants"]:
        cells = [f"{summary[t][variant][s]['loss']['mean']:.3f} ± {summary[t][variant][s]['loss']['sd']:.3f}"
                 for t, s in columns]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(data: dict, out_dir: Path, prefix: str = "ablation") -> list[Path]:
    """One PNG per group: rows validation exact match and loss, one column per task; the mean
    over seeds as a line, the range (min to max) shaded."""
    import numpy as np
    from minis2s.plot import _pyplot
    plt = _pyplot()
    protocol, runs = data["protocol"], data["runs"]
    tasks = list(protocol["tasks"])
    written = []
    for group, variants in protocol["groups"].items():
        fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 6.4), squeeze=False)
        for col, task in enumerate(tasks):
            for k, variant in enumerate(variants):
                mine = [r for r in runs if r["task"] == task and r["variant"] == variant]
                if not mine:
                    continue
                epochs = [c["epoch"] for c in mine[0]["curves"]]
                for row, key, scale in ((0, "valid_exact_match", 100.0), (1, "valid_loss", 1.0)):
                    values = np.array([[c[key] * scale for c in r["curves"]] for r in mine])
                    ax = axes[row][col]
                    color = f"C{k}"
                    ax.plot(epochs, values.mean(axis=0), marker="o", ms=3, color=color,
                            label=variant)
                    ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=color,
                                    alpha=0.15, lw=0)
            axes[0][col].set_title(f"{task} (n_train {protocol['tasks'][task]['n_train']})")
            axes[0][col].set_ylabel("valid exact match (%)")
            axes[1][col].set_ylabel("valid cross-entropy (nats/token)")
            axes[1][col].set_yscale("log")
            for row in (0, 1):
                axes[row][col].set_xlabel("epoch")
                axes[row][col].grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"{group}: mean of {len(protocol['seeds'])} seeds, range shaded", fontsize=11)
        fig.tight_layout()
        path = out_dir / f"{prefix}-{group}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), metavar="DIR",
                   help="where ablations.json goes (default benchmarks/results)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="where the figures go (default docs/images; with --tiny, --out)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long protocol, for the tests")
    p.add_argument("--plot-only", action="store_true", help="redraw the figures from the saved JSON")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = Path(args.images) if args.images else (out if args.tiny else ROOT / "docs" / "images")
    images.mkdir(parents=True, exist_ok=True)
    json_path = out / ("ablations-tiny.json" if args.tiny else "ablations.json")
    if args.plot_only:
        data = json.loads(json_path.read_text())
    else:
        from grad import backend
        backend.tune_host_allocator()
        protocol = TINY if args.tiny else PROTOCOL
        runs, start, cpu_start = [], time.perf_counter(), time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            for task, sizes in protocol["tasks"].items():
                for variant, settings in protocol["variants"].items():
                    for seed in protocol["seeds"]:
                        r = run_one(task, sizes, protocol["model"], settings, seed, Path(tmp))
                        runs.append({"task": task, "variant": variant, "seed": seed, **r})
                        test = r["test"]["test"]
                        print(f"{task:<9} {variant:<22} seed {seed}  test exact "
                              f"{100 * test['exact_match']:5.1f}%  loss {test['loss']:.3f}  "
                              f"({r['seconds']:.0f}s)", flush=True)
        data = {"protocol": protocol, "runs": runs, "summary": summarise(runs),
                "total_seconds": round(time.perf_counter() - start, 1),
                "total_cpu_seconds": round(time.process_time() - cpu_start, 1),
                "machine": {"python": platform.python_version(), "processor": platform.machine(),
                            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}}
        json_path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {json_path} ({data['total_seconds']:.0f}s wall, "
              f"{data['total_cpu_seconds']:.0f}s CPU in all)")
    print("\ntest exact match (%), mean ± sd over seeds [min-max]\n" + markdown_table(data))
    print("\ntest cross-entropy (nats per token), mean ± sd over seeds\n" + loss_table(data))
    for path in plot(data, images, prefix="ablation-tiny" if args.tiny else "ablation"):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
