"""Mutation run: realistic silent bugs, one at a time, each of which the tests must catch.

    python tools/mutants.py                 # every mutant, two at a time; exit 1 on a survivor
    python tools/mutants.py --only NAME     # one mutant (repeat --only for several)
    python tools/mutants.py --list          # names, files and test selections
    python tools/mutants.py --workers 1     # one at a time

A mutant is ``(name, file, old text, new text, test files)``: one small edit that a person could
make by mistake and that leaves the program running. For each mutant the harness

1. copies the tracked tree (``git ls-files``) to a temporary directory and replaces the exact
   ``old`` text, which must occur exactly once in ``file``, by ``new``. When it does not (the
   code moved or changed), the run stops before doing anything else and names the mutant: the
   list below must follow the code;
2. runs a smoke run on the mutated copy -- a few training steps (with teacher-forcing sampling,
   a resume, validation and the test evaluation), translation with greedy and beam search, an
   n-gram and an LSTM language model -- after checking that ``minis2s``, ``grad`` and the
   mutated module are imported from the copy and that the module holds the new text. The smoke
   run must *complete*: a mutant that only crashes is not a silent bug, is reported as
   ``crash-only, not counted`` and fails the run (choose a better mutant);
3. runs the mutant's test selection (whole test files, ``pytest -x``) in the copy, with a
   plugin that checks again that the mutated module is the one the tests import, and records
   the first failing test (killed) or none (SURVIVED).

Output: one line per mutant, ``name  killed by tests/test_x.py::test_y`` or ``name  SURVIVED``
(followed by the mutant's diff), then a summary. Exit status 0 when every mutant was killed,
1 when one survived, 2 when the harness could not judge one (old text not found, crash-only
smoke run, wrong module imported, a test run that errored or timed out).

The test selections assume the unmutated tree passes them (``.ci/run`` runs the whole suite
first). Each mutant runs in its own copy with its own pytest temporary directory, so two can
run at once; every process is limited to one BLAS thread.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import difflib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import namedtuple
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
Mutant = namedtuple("Mutant", ["name", "file", "old", "new", "tests"])

SEQ2SEQ = ("tests/test_seq2seq.py",)
TRAIN = ("tests/test_train.py",)

MUTANTS = [
    # ---------------------------------------------------------------- the nine
    Mutant("input-feeding-off", "minis2s/models/decoder.py",
           'gates = gates + F.linear(feed, w["w_feed"])                   # (B, 4H)',
           'gates = gates                                                  # (B, 4H)', SEQ2SEQ),
    Mutant("tf-ratio-not-passed", "minis2s/train.py",
           "tf_ratio=tf_ratio, generator=tf_generator,",
           "generator=tf_generator,", TRAIN),
    Mutant("tf-generator-not-restored", "minis2s/train.py",          # nor saved: not handed over
           'generators={"dropout_generator": _dropout_generator(model),\n'
           '                                  "tf_generator": tf_gen},',
           'generators={"dropout_generator": _dropout_generator(model)},', TRAIN),
    Mutant("eval-loss-per-sentence", "minis2s/train.py",
           'stats = CorpusStats(nll_sum=sums["nll"], n_tokens=sums["tokens"],',
           'stats = CorpusStats(nll_sum=sums["nll"], n_tokens=n,', TRAIN),
    Mutant("lstm-hx-ignored-with-lengths", "grad/nn/rnn.py",
           "                if hx is None:\n",
           "                if hx is None or masks is not None:\n", ("tests/test_lstm.py",)),
    Mutant("length-penalty-half-alpha", "minis2s/search.py",
           "return ((5.0 + np.asarray(length, dtype=np.float64)) / 6.0) ** alpha",
           "return ((5.0 + np.asarray(length, dtype=np.float64)) / 6.0) ** (alpha / 2)", SEQ2SEQ),
    Mutant("kneser-ney-bos-continuation", "minis2s/lm/ngram.py",
           "counts[n] = {g: (c if g[0] == BOS else cont[g]) for g, c in raw[n].items()}",
           "counts[n] = {g: cont[g] for g, c in raw[n].items()}", ("tests/test_ngram.py",)),
    Mutant("kneser-ney-auto-discount", "minis2s/lm/ngram.py",
           "return n1 / (n1 + 2 * n2) if n1 > 0 else 0.75",
           "return n1 / (n1 + n2) if n1 > 0 else 0.75", ("tests/test_ngram.py",)),
    Mutant("gradcheck-ones-cotangent", "grad/gradcheck.py",
           'cotangents = [gen.normal(o.shape, dtype="float64") for o in outs]',
           "cotangents = [B.full(o.shape, 1.0, like=o.data) for o in outs]",
           ("tests/test_gradcheck.py",)),
    # ---------------------------------------------------------------- grad/
    Mutant("dropout-not-inverted", "grad/functional.py",
           "return gen.bernoulli(shape, 1.0 - p, dtype=like.dtype) / (1.0 - p)",
           "return gen.bernoulli(shape, 1.0 - p, dtype=like.dtype)", ("tests/test_functional.py",)),
    Mutant("clip-by-squared-norm", "grad/nn/utils.py",
           "ratio = max_norm / (norm + 1e-6)", "ratio = max_norm / (total + 1e-6)",
           ("tests/test_nn.py",)),
    Mutant("scatter-rounds-overwrite", "grad/backend.py",
           "out[index[rows]] += values[rows]                    # distinct slots: no repeats",
           "out[index[rows]] = values[rows]                     # distinct slots: no repeats",
           ("tests/test_backend.py",)),
    Mutant("adam-no-bias-correction", "grad/optim.py",
           "update *= lr / (1.0 - b1 ** t)", "update *= lr", ("tests/test_optim.py",)),
    Mutant("flat-adam-no-bias-correction", "grad/optim.py",
           "step *= lr / (1.0 - b1 ** t)", "step *= lr", ("tests/test_flat.py",)),
    Mutant("flat-clip-by-squared-norm", "grad/nn/utils.py",
           "limit = max_norm / (norm + 1e-6)", "limit = max_norm / (norm * norm + 1e-6)",
           ("tests/test_flat.py",)),
    Mutant("optimizer-state-not-copied", "grad/optim.py",
           "state = [{k: (B.xp.asarray(v, copy=True) if B.is_array(v) else v) for k, v in s.items()}",
           "state = [{k: v for k, v in s.items()}", ("tests/test_optim.py",)),
    # ---------------------------------------------------------------- models
    Mutant("attention-ignores-padding", "minis2s/models/attention.py",
           "context, weights = F.attention_lookup(q, memory, pad_mask)",
           "context, weights = F.attention_lookup(q, memory, None)", SEQ2SEQ),
    Mutant("encoder-merge-without-permute", "minis2s/models/encoder.py",
           "return ops.reshape(ops.permute(per_layer, (0, 2, 1, 3)),",
           "return ops.reshape(ops.permute(per_layer, (0, 1, 2, 3)),", SEQ2SEQ),
    Mutant("decoder-cell-state-from-h", "minis2s/models/decoder.py",
           "return [ops.cat([h[k], c[k]], dim=1) for k in range(h.shape[0])]",
           "return [ops.cat([h[k], h[k]], dim=1) for k in range(h.shape[0])]", SEQ2SEQ),
    Mutant("loss-counts-padding", "minis2s/models/seq2seq.py",
           "ignore_index=self.pad_idx, reduction=reduction,",
           "ignore_index=-100, reduction=reduction,", SEQ2SEQ),
    # ---------------------------------------------------------------- search
    Mutant("greedy-scores-after-eos", "minis2s/search.py",
           "scores += np.where(done, 0.0, best_lp)", "scores += best_lp", SEQ2SEQ),
    Mutant("beam-penalty-length-off-by-one", "minis2s/search.py",
           "cand_scores / _penalty(t + 1, length_penalty)",
           "cand_scores / _penalty(t, length_penalty)", SEQ2SEQ),
    Mutant("search-may-emit-bos", "minis2s/decoding.py",
           "banned = banned | (ids == token)                                   # (V,)",
           "banned = banned                                                    # (V,)", SEQ2SEQ),
    # ---------------------------------------------------------------- metrics
    Mutant("bleu-brevity-penalty-inverted", "minis2s/metrics.py",
           "    elif c < r:\n", "    elif c > r:\n", ("tests/test_metrics.py",)),
    Mutant("bleu-counts-not-clipped", "minis2s/metrics.py",
           "matches[n - 1] += sum(min(k, max_ref[g]) for g, k in hyp_counts.items())",
           "matches[n - 1] += sum(k for g, k in hyp_counts.items() if max_ref[g])",
           ("tests/test_metrics.py",)),
    # ---------------------------------------------------------------- lm
    Mutant("add-k-denominator-without-k", "minis2s/lm/ngram.py",
           "return (c + self.k) / (total + self.k * V)", "return (c + self.k) / (total + V)",
           ("tests/test_ngram.py",)),
    Mutant("lstm-lm-perplexity-exp-of-sum", "minis2s/lm/lstm_lm.py",
           "return math.exp(nll / max(n, 1))", "return math.exp(nll)",
           ("tests/test_lm_learning.py",)),
    Mutant("lstm-lm-loss-mean-per-batch", "minis2s/lm/training.py",
           "loss, value = total / scale, total.item() / n_tokens",
           "loss, value = total / n_tokens, total.item() / n_tokens",
           ("tests/test_lm_learning.py",)),
    # ---------------------------------------------------------------- train, engine, checkpoint
    Mutant("best-checkpoint-on-higher-loss", "minis2s/train.py",
           'higher_is_better=cfg.select_metric != "loss",',
           'higher_is_better=cfg.select_metric == "loss",', TRAIN),
    Mutant("lr-decay-one-epoch-late", "minis2s/train.py",
           "return cfg.lr * 0.5 ** (epoch - cfg.lr_decay_start + 1)",
           "return cfg.lr * 0.5 ** (epoch - cfg.lr_decay_start)", TRAIN),
    Mutant("train-loss-not-token-weighted", "minis2s/trainer_core.py",
           't["epoch_nll"] += value * n_tokens', 't["epoch_nll"] += value', TRAIN),
    Mutant("select-tie-goes-to-the-later-epoch", "minis2s/trainer_core.py",
           'and loss < t["best_loss"]))', 'and loss <= t["best_loss"]))',
           ("tests/test_trainer_select.py",)),
    Mutant("generators-not-restored", "minis2s/trainer_core.py",
           "                gen.load_state_dict(ts[name])\n", "                pass\n", TRAIN),
    Mutant("engine-resume-skips-one-batch-too-few", "minis2s/engine.py",
           "for _ in range(st.iteration_in_epoch):", "for _ in range(st.iteration_in_epoch - 1):",
           ("tests/test_engine.py",)),
    Mutant("checkpoint-files-private", "minis2s/checkpoint.py",
           "        return 0o666 & ~_umask()\n", "        return 0o600 & ~_umask()\n",
           ("tests/test_checkpoint.py",)),
    # ---------------------------------------------------------------- data-parallel pieces
    Mutant("shards-overlap-when-uneven", "minis2s/distributed.py",
           "lo = self.rank * q + min(self.rank, r)", "lo = self.rank * q",
           ("tests/test_distributed.py",)),
    Mutant("flat-scatter-from-the-start", "grad/flat.py",
           "for o, n, s in zip(self.offsets, self.sizes, self.shapes)]",
           "for o, n, s in zip([0] * len(self.sizes), self.sizes, self.shapes)]",
           ("tests/test_distributed.py",)),
    # ---------------------------------------------------------------- the readable path, the Transformer
    Mutant("reference-mode-runs-the-fast-twin", "grad/modes.py",
           "                return reference(*args, **kwargs)",
           "                return fast(*args, **kwargs)",
           ("tests/test_reference_step.py", "tests/test_modes.py")),
    Mutant("leaf-grad-shares-an-op-array", "grad/accumulate.py",
           "        total = B.xp.asarray(total, copy=True)                    # never one an op may share",
           "        total = total                                             # never one an op may share",
           ("tests/test_tensor.py", "tests/test_modes.py")),
    Mutant("lstm-layer-backward-uses-the-new-cell", "grad/functional.py",
           "tc, (_, c_prev) = tcs[t, ...], previous(t)",
           "tc, (_, c_prev) = tcs[t, ...], (None, hc[1, t, ...])",
           ("tests/test_lstm.py",)),
    Mutant("kv-cache-forgets-the-past", "minis2s/models/transformer.py",
           "k, v = ops.cat([cache[0], k], dim=2), ops.cat([cache[1], v], dim=2)",
           "k, v = k, v",
           ("tests/test_transformer_seq2seq.py",)),
]

# --------------------------------------------------------------------------- the smoke run
SMOKE = r'''
import hashlib, importlib, os, sys, tempfile, warnings
root, file, module, digest = (os.environ[k] for k in ("MUTANT_ROOT", "MUTANT_FILE", "MUTANT_MODULE", "MUTANT_SHA256"))
real = os.path.realpath
for name in ("grad", "minis2s", module):
    where = real(importlib.import_module(name).__file__)
    if not where.startswith(real(root) + os.sep):
        sys.exit(f"mutant harness: {name} imported from {where}, not from the copy {root}")
path = real(importlib.import_module(module).__file__)
if path != real(os.path.join(root, file)):
    sys.exit(f"mutant harness: {module} is {path}, not the mutated {file}")
with open(path, "rb") as f:
    if hashlib.sha256(f.read()).hexdigest() != digest:
        sys.exit(f"mutant harness: {path} is not the mutated file")

warnings.simplefilter("ignore")
import minis2s
from minis2s.lm.ngram import NGramLM
from minis2s.lm.training import LMConfig, train_lstm
from minis2s.train import TrainConfig, fit
out = os.path.join(tempfile.mkdtemp(prefix="smoke-"), "run")
cfg = dict(task="dates", n_train=48, n_valid=6, n_test=6, emb_size=8, hidden_size=16, layers=2,
           batch_size=16, dropout=0.1, tf_ratio=0.5, lr_decay_start=2, valid_decode_limit=3,
           quiet=True, out=out)
fit(TrainConfig(epochs=1, **cfg), log=lambda m: None)
fit(TrainConfig(epochs=2, quiet=True), resume=out, log=lambda m: None)
model = minis2s.load(out)
sources = ["23 Nov 2026", "2026년 1월 5일"]
model.translate(sources, beam_size=1, max_output_length=12)
model.translate(sources, beam_size=3, n_best=2, length_penalty=0.6, max_output_length=12)
words = [s.split() for s in ["a b c", "b c a", "a a", "", "c b a b"] * 4]
for smoothing in ("kneser-ney", "add-k"):
    NGramLM(3, smoothing, discount="auto", k=0.5).fit(words).perplexity(words[:5])
train_lstm(LMConfig(epochs=1, emb_size=8, hidden_size=8, min_freq=1, batch_size=4), words,
           words[:5], words[:5], log=lambda m: None)
print("smoke run completed")
'''

# The pytest plugin that makes sure the tests import the mutated copy.
GUARD = r'''
import hashlib, importlib, os
import pytest


def pytest_collection_finish(session):
    root, file, module, digest = (os.environ[k] for k in
                                  ("MUTANT_ROOT", "MUTANT_FILE", "MUTANT_MODULE", "MUTANT_SHA256"))
    path = os.path.realpath(importlib.import_module(module).__file__)
    with open(path, "rb") as f:
        mutated = hashlib.sha256(f.read()).hexdigest() == digest
    if path != os.path.realpath(os.path.join(root, file)) or not mutated:
        pytest.exit(f"mutant harness: the tests import {module} from {path}, not the mutated copy",
                    returncode=17)
'''
GUARD_FAILED = 17

Result = namedtuple("Result", ["mutant", "status", "detail", "seconds"])
# status: "killed" (detail = the first failing test), "survived", "crash-only", "error"


def module_name(file: str) -> str:
    return file[:-len(".py")].replace("/", ".").removesuffix(".__init__")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"mutants.py: cannot list the tracked files with git ls-files in {ROOT}: {exc}")
    return [f for f in out.stdout.decode("utf-8").split("\0") if f and (ROOT / f).is_file()]


def check_mutants(mutants) -> list[str]:
    """Problems that stop the run before it starts: unknown file, old text not found exactly once."""
    problems, names = [], set()
    for m in mutants:
        if m.name in names:
            problems.append(f"mutant {m.name}: the name is used twice")
        names.add(m.name)
        path = ROOT / m.file
        if not path.is_file():
            problems.append(f"mutant {m.name}: file {m.file} not found")
            continue
        count = path.read_text(encoding="utf-8").count(m.old)
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times (must be unique)"
            problems.append(f"mutant {m.name}: old text {where} in {m.file} (the code moved or "
                            f"changed: update the mutant in tools/mutants.py)\n    old text: {m.old!r}")
        for test in m.tests:
            if not (ROOT / test).is_file():
                problems.append(f"mutant {m.name}: test file {test} not found")
    return problems


def diff(m: Mutant) -> str:
    text = (ROOT / m.file).read_text(encoding="utf-8")
    lines = difflib.unified_diff(text.splitlines(True), text.replace(m.old, m.new).splitlines(True),
                                 f"a/{m.file}", f"b/{m.file}", n=2)
    return "".join(lines)


def _env(copy: Path, guard_dir: Path, m: Mutant, digest: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTHONPATH")}
    env.update(PYTHONPATH=os.pathsep.join([str(guard_dir), str(copy)]), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               MUTANT_ROOT=str(copy), MUTANT_FILE=m.file, MUTANT_MODULE=module_name(m.file),
               MUTANT_SHA256=digest)
    return env


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def run_mutant(m: Mutant, base: Path, work: Path, guard_dir: Path, timeout: float) -> Result:
    start = time.perf_counter()
    copy = work / m.name
    shutil.copytree(base, copy)
    try:
        path = copy / m.file
        mutated = path.read_text(encoding="utf-8").replace(m.old, m.new, 1).encode("utf-8")
        path.write_bytes(mutated)
        env = _env(copy, guard_dir, m, hashlib.sha256(mutated).hexdigest())
        try:
            smoke = subprocess.run([sys.executable, "-c", SMOKE], cwd=copy, env=env,
                                   capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Result(m, "crash-only", f"the smoke run did not finish in {timeout:.0f} s",
                          time.perf_counter() - start)
        if smoke.returncode != 0:
            output = smoke.stdout + smoke.stderr
            status = "error" if "mutant harness:" in output else "crash-only"
            return Result(m, status, _tail(output), time.perf_counter() - start)
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider",
               "-p", "_mutant_guard", f"--basetemp={copy / '.pytest-tmp'}", *m.tests]
        try:
            tests = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True,
                                   timeout=timeout)
        except subprocess.TimeoutExpired:
            return Result(m, "error", f"the tests did not finish in {timeout:.0f} s",
                          time.perf_counter() - start)
        seconds = time.perf_counter() - start
        output = tests.stdout + tests.stderr
        if tests.returncode == 0:
            return Result(m, "survived", "", seconds)
        if tests.returncode == 1:
            found = re.search(r"^(?:FAILED|ERROR) (\S+)", tests.stdout, re.MULTILINE)
            if found:
                return Result(m, "killed", found.group(1), seconds)
        what = ("the tests did not import the mutated copy" if tests.returncode == GUARD_FAILED
                else f"pytest exited with status {tests.returncode}")
        return Result(m, "error", f"{what}\n{_tail(output)}", seconds)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def line(r: Result, width: int) -> str:
    if r.status == "killed":
        return f"{r.mutant.name:<{width}}  killed by {r.detail}"
    if r.status == "survived":
        return f"{r.mutant.name:<{width}}  SURVIVED"
    if r.status == "crash-only":
        return f"{r.mutant.name:<{width}}  crash-only, not counted (the smoke run failed: choose a mutant that runs)"
    return f"{r.mutant.name:<{width}}  HARNESS ERROR"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutant (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--workers", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed to each smoke run and each test run (default 300)")
    parser.add_argument("--times", action="store_true", help="also print each mutant's seconds")
    args = parser.parse_args(argv)
    mutants = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in MUTANTS})
        if unknown:
            parser.error(f"unknown mutant(s): {', '.join(unknown)} (see --list)")
        mutants = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name:<40} {m.file:<30} {' '.join(m.tests)}")
        return 0
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    problems = check_mutants(mutants)
    if problems:
        print("mutants.py: cannot run the mutants:\n" + "\n".join("  " + p for p in problems),
              file=sys.stderr)
        return 2

    width = max(len(m.name) for m in mutants)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="minis2s-mutants-"))
    results = []
    try:
        base = work / "tree"
        for f in tracked_files():
            (base / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, base / f)
        guard_dir = work / "guard"
        guard_dir.mkdir()
        (guard_dir / "_mutant_guard.py").write_text(textwrap.dedent(GUARD), encoding="utf-8")
        print(f"{len(mutants)} mutants, {args.workers} at a time, in {work}", flush=True)
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(run_mutant, m, base, work, guard_dir, args.timeout) for m in mutants]
            for future in futures:                 # in the list's order, as soon as each is known
                r = future.result()
                results.append(r)
                print(line(r, width) + (f"  ({r.seconds:.1f} s)" if args.times else ""), flush=True)
                if r.status == "survived":
                    print(textwrap.indent(diff(r.mutant), "    "), flush=True)
                elif r.status != "killed":
                    print(textwrap.indent(r.detail, "    "), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    counts = {s: sum(r.status == s for r in results) for s in ("killed", "survived", "crash-only", "error")}
    wall = time.perf_counter() - started
    print(f"\n{counts['killed']} of {len(results)} mutants killed, {counts['survived']} survived, "
          f"{counts['crash-only']} crash-only (not counted), {counts['error']} harness errors; "
          f"{wall:.0f} s wall with {args.workers} worker(s)")
    for r in results:
        if r.status == "survived":
            print(f"\nSURVIVED: {r.mutant.name} (tests: {' '.join(r.mutant.tests)})\n{diff(r.mutant)}")
    if counts["survived"]:
        return 1
    return 0 if counts["killed"] == len(results) else 2


if __name__ == "__main__":
    sys.exit(main())
