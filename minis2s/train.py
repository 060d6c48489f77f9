"""The training procedure, wired explicitly on the event ``Engine``.

Two engines, as in Ignite: the *trainer* runs one optimisation step per batch; at the end of each
epoch a handler runs the *evaluator* (``make_evaluator``, inside ``evaluate``) over the validation
split. Everything that happens between
steps is a handler on an event, registered in ``fit`` where a reader can see it::

    EPOCH_STARTED        learning-rate schedule (halving from --lr-decay-start)
    ITERATION_COMPLETED  progress bar; a Ctrl-C requested? stop cleanly at this batch boundary
    EPOCH_COMPLETED      validate -> save best (if better) -> log a JSON line -> save last
                         (the resume point, written last) -> early stopping

After the run, the best checkpoint is evaluated on the test split(s).

One step: forward with teacher forcing -> cross-entropy per target token (PAD excluded) ->
backward -> clip the global gradient norm -> optimizer step.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

import grad
from grad import backend as B
from grad import optim
from grad.nn.utils import clip_grad_norm_
from grad.tensor import Tensor, no_grad

from .checkpoint import (FORMAT_VERSION, append_line, atomic_write, load_checkpoint, read_json,
                         save_checkpoint, write_json)
from .engine import Engine, Events
from .guard import DivergenceGuard, TrainingError, param_norm
from .metrics import format_ppl, perplexity
from .models import Seq2Seq
from .runs import RunLock, prepare_data, Prepared
from .validate import restore_checkpoint, resume_config


@dataclass
class TrainConfig:
    # data
    task: str | None = "dates"
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    train_src: str | None = None
    train_tgt: str | None = None
    valid_src: str | None = None
    valid_tgt: str | None = None
    test_src: str | None = None
    test_tgt: str | None = None
    tokenizer: str | None = None           # None: the task's own choice ("char" for files)
    bpe_merges: int = 1000
    max_length: int = 64
    skip_bad_lines: bool = False
    # model
    emb_size: int = 64
    hidden_size: int = 128
    layers: int = 1
    dropout: float = 0.1
    attention: str = "general"
    input_feeding: bool = True
    # optimisation
    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 2e-3
    lr_decay_start: int | None = None
    patience: int | None = None
    label_smoothing: float = 0.0
    tf_ratio: float = 1.0
    max_grad_norm: float = 5.0
    nan_policy: str = "stop"
    select_metric: str = "loss"
    seed: int = 0
    device: str = "cpu"
    out: str | None = None
    quiet: bool = False
    n_train: int | None = None             # built-in tasks: override the split sizes
    n_valid: int | None = None
    n_test: int | None = None
    valid_decode_limit: int | None = 1000  # sentences decoded per validation (None: all)
    extra: dict = field(default_factory=dict)


def _lr_for_epoch(cfg: TrainConfig, epoch: int) -> float:
    """Constant learning rate, halved once per epoch from ``lr_decay_start`` on (epochs from 1)."""
    if cfg.lr_decay_start is None or epoch < cfg.lr_decay_start:
        return cfg.lr
    return cfg.lr * 0.5 ** (epoch - cfg.lr_decay_start + 1)


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric == "loss" else new > old


def build_model(model_cfg: dict, seed: int) -> Seq2Seq:
    return Seq2Seq(**model_cfg, generator=grad.Generator(seed))


def make_optimizer(cfg: TrainConfig, model):
    if cfg.optimizer == "adam":
        return optim.Adam(model.parameters(), lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return optim.SGD(model.parameters(), lr=cfg.lr)
    raise ValueError(f"--optimizer must be 'adam' or 'sgd', got {cfg.optimizer!r}")


def to_device(batch):
    """Host arrays of a batch -> backend tensors, once per batch."""
    return (Tensor(B.from_numpy(batch.src)), B.from_numpy(batch.src_lengths),
            Tensor(B.from_numpy(batch.tgt_in)), Tensor(B.from_numpy(batch.tgt_out)))


# =============================================================================== evaluation
def make_evaluator(model) -> Engine:
    """The *evaluator*: an ``Engine`` whose step scores one batch teacher-forced (no update),
    with handlers that sum the per-token figures over the whole split. After ``run``,
    ``evaluator.state.metrics`` holds ``nll`` (summed), ``tokens`` and ``correct``."""
    xp = B.xp

    def eval_step(engine, batch):
        src, sl, tin, tout = to_device(batch)
        logits = model.logits(src, sl, tin)                                  # (B, T, V)
        v = logits.shape[-1]
        nll = grad.functional.cross_entropy(logits.reshape(-1, v), tout.reshape(-1),
                                            ignore_index=0, reduction="sum").item()
        pred = B.to_numpy(xp.argmax(logits.data, axis=-1))                    # (B, T) host
        mask = batch.tgt_out != 0                                             # PAD excluded
        return {"nll": nll, "tokens": int(mask.sum()),
                "correct": int(((pred == batch.tgt_out) & mask).sum())}

    evaluator = Engine(eval_step)

    @evaluator.on(Events.EPOCH_STARTED)
    def reset(engine):
        engine.state.metrics = {"nll": 0.0, "tokens": 0, "correct": 0}

    @evaluator.on(Events.ITERATION_COMPLETED)
    def accumulate(engine):
        for key, value in engine.state.output.items():
            engine.state.metrics[key] += value

    return evaluator


@no_grad()
def evaluate(model, prep: Prepared, split: str, batch_size: int = 128, decode_limit=None,
             beam_size: int = 1, max_len: int | None = None) -> dict:
    """Cross-entropy and perplexity per target token (teacher-forced, PAD excluded, EOS
    counted) and token accuracy over the WHOLE split, from one run of the evaluator engine
    (``make_evaluator``); exact match and BLEU of greedy (or beam) outputs on the first
    ``decode_limit`` sentences."""
    from .data.batching import collate, make_batches
    from .metrics import corpus_bleu
    was_training = model.training
    model.eval()
    src_ids, tgt_ids = prep.ids[split]
    n = len(src_ids)
    lengths = [max(len(s), len(t)) for s, t in zip(src_ids, tgt_ids)]
    batches = [collate(src_ids, tgt_ids, idx) for idx in make_batches(lengths, batch_size, shuffle=False)]
    sums = make_evaluator(model).run(batches, max_epochs=1).metrics
    nll, n_tokens, n_correct = sums["nll"], sums["tokens"], sums["correct"]
    ce = nll / max(n_tokens, 1)
    metrics = {"loss": ce, "ppl": perplexity(ce), "token_acc": n_correct / max(n_tokens, 1)}
    limit = n if decode_limit is None else min(n, decode_limit)
    hyps, refs = [], []
    order = list(range(limit))
    max_len = max_len or (max((len(t) for t in tgt_ids[:limit]), default=1) + 5)
    for start in range(0, limit, batch_size):
        idx = order[start:start + batch_size]
        batch = collate(src_ids, tgt_ids, idx)
        if beam_size > 1:
            out = model.beam_search(batch.src, batch.src_lengths, beam_size=beam_size, max_len=max_len)
            tokens = out.tokens[:, 0]
        else:
            tokens = model.greedy(batch.src, batch.src_lengths, max_len=max_len).tokens
        for row, i in zip(tokens, idx):
            hyps.append(prep.tgt_vocab.decode(row.tolist()))
            refs.append(prep.tgt_vocab.decode(tgt_ids[i]))
    metrics["exact_match"] = sum(h == r for h, r in zip(hyps, refs)) / max(limit, 1)
    metrics["bleu"] = corpus_bleu(hyps, refs) if limit else 0.0
    metrics["decoded"] = limit
    model.train(was_training)
    return metrics


# =============================================================================== training
def fit(cfg: TrainConfig, resume: str | None = None, log=print, run_info: dict | None = None) -> dict:
    """Train a model as ``cfg`` says (or continue the run in ``resume``); returns a summary with
    the test metrics and the run directory. ``run_info`` (e.g. the BLAS thread count) is
    recorded in every log.jsonl line; it describes how this process ran, not the model, so a
    run may resume with other values."""
    if cfg.device == "cuda":
        B.use("cupy")          # raises a clear BackendError when no GPU is usable
    run_dir = Path(resume) if resume else _new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)
    with lock:
        _remove_temporaries(run_dir)
        return _fit_locked(cfg, run_dir, resume is not None, log, run_info or {})


def _trim_log(path: Path, iteration: int) -> None:
    """Drop log lines written after the checkpoint (``iteration`` steps into the run): a run
    killed between writing an epoch's log line and its checkpoint re-runs that epoch on resume
    and writes the line again. Works for end-of-epoch and mid-epoch (Ctrl-C) checkpoints alike;
    a line that does not parse (cut short by a full disk) is dropped too."""
    if not path.is_file():
        return

    def keep(line):
        try:
            return json.loads(line).get("iteration", 0) <= iteration
        except (ValueError, AttributeError):
            return False
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    kept = [line for line in lines if line.strip() and keep(line)]
    if len(kept) != len(lines):
        text = "".join(line + "\n" for line in kept).encode("utf-8")
        atomic_write(path, lambda f: f.write(text))


def _remove_temporaries(run_dir: Path) -> None:
    """Half-written files (``.NAME.*.tmp``) left by a process killed during an atomic write;
    called with the run lock held, so no live writer owns them."""
    for tmp in run_dir.glob(".*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def _new_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out:
        out = Path(cfg.out)
        if (out / "last.npz").exists():
            raise ValueError(f"{out} already holds a run; continue it with --resume {out} or choose another --out")
        return out
    base = Path("runs") / (cfg.task if cfg.task and not (cfg.train or cfg.train_src) else "custom")
    out, k = base, 1
    while (out / "last.npz").exists() or (out / "config.json").exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def _fit_locked(cfg: TrainConfig, run_dir: Path, resuming: bool, log, run_info: dict) -> dict:
    start_time = time.time()
    if resuming:
        saved = resume_config(read_json(run_dir / "config.json"), run_dir / "config.json",
                              [f.name for f in fields(TrainConfig)])
        epochs = cfg.epochs
        cfg = TrainConfig(**{**saved["train"], "epochs": epochs, "quiet": cfg.quiet, "out": str(run_dir)})
    prep = prepare_data(cfg, run_dir if resuming else None)
    model_cfg = dict(src_vocab_size=len(prep.src_vocab), tgt_vocab_size=len(prep.tgt_vocab),
                     emb_size=cfg.emb_size, hidden_size=cfg.hidden_size, num_layers=cfg.layers,
                     dropout=cfg.dropout, pad_idx=0,
                     attention=None if cfg.attention == "none" else cfg.attention,
                     input_feeding=cfg.input_feeding)
    model = build_model(model_cfg, cfg.seed)
    dropout_gen = model.decoder.dropout_generator
    tf_gen = grad.Generator(cfg.seed + 1)
    optimizer = make_optimizer(cfg, model)
    if not resuming:
        prep.save(run_dir)
        write_json(run_dir / "config.json", {"format_version": FORMAT_VERSION, "model": model_cfg,
                                             "data": prep.data_config(), "train": asdict(cfg)})
    src_ids, tgt_ids = prep.ids["train"]
    lengths = [max(len(s), len(t)) for s, t in zip(src_ids, tgt_ids)]
    params = list(model.parameters())
    tracker = {"best": None, "bad_epochs": 0, "skipped": 0, "epoch_nll": 0.0, "epoch_tokens": 0,
               "epoch_gnorm": 0.0, "epoch_steps": 0, "epoch_start": time.time()}

    from .data.batching import collate, make_batches

    def epoch_batches(epoch):
        """The epoch's batches: shuffled from a generator seeded by (seed, epoch), so a resumed
        run rebuilds exactly the order it was in."""
        rng = np.random.default_rng([cfg.seed, epoch])
        return [collate(src_ids, tgt_ids, idx) for idx in make_batches(lengths, cfg.batch_size, True, rng)]

    guard = DivergenceGuard()
    named_params = list(model.named_parameters())

    def diverged(engine, what: str, can_skip: bool = True):
        """Stop (exit 1, last good checkpoint untouched) or, under --nan-policy skip, skip."""
        where = f"epoch {engine.state.epoch}, iteration {engine.state.iteration}"
        if cfg.nan_policy == "skip" and can_skip:
            tracker["skipped"] += 1
            guard.warn_once("skip", f"skipped the batch at {where}: {what} (--nan-policy skip; "
                                    "further skipped batches are counted in log.jsonl, not shown)")
            return {"loss": float("nan"), "skipped": True}
        saved = (f"the last good checkpoint in {run_dir} is untouched"
                 if (run_dir / "last.npz").exists() else "no checkpoint had been saved yet")
        hint = ("try a lower --lr, or --nan-policy skip" if can_skip else
                "--nan-policy skip cannot undo an update that was already applied; try a lower --lr")
        raise TrainingError(f"{what} at {where}; {saved} ({hint})")

    def train_step(engine, batch):
        model.train()
        src, sl, tin, tout = to_device(batch)
        with guard.step():
            total = model.loss(src, sl, tin, tout, tf_ratio=cfg.tf_ratio, generator=tf_gen,
                               label_smoothing=cfg.label_smoothing, reduction="sum")
            loss = total / float(batch.n_tokens)
            value = loss.item()
            problem = guard.check_loss(value)
            if problem:
                return diverged(engine, problem)
            optimizer.zero_grad()
            loss.backward()
            gnorm = clip_grad_norm_(params, cfg.max_grad_norm).item()
            problem = guard.check_grad_norm(gnorm)
            if problem:
                optimizer.zero_grad()
                return diverged(engine, problem)
            optimizer.step()
            problem = guard.check_params(named_params)
            if problem:
                return diverged(engine, problem, can_skip=False)
        tracker["epoch_nll"] += value * batch.n_tokens
        tracker["epoch_tokens"] += batch.n_tokens
        tracker["epoch_gnorm"] += gnorm
        tracker["epoch_steps"] += 1
        return {"loss": value, "grad_norm": gnorm}

    trainer = Engine(train_step)

    def trainer_state() -> dict:
        st = trainer.state
        return {"epoch": st.epoch, "iteration": st.iteration,
                "iteration_in_epoch": getattr(st, "iteration_in_epoch", 0),
                "best": tracker["best"], "bad_epochs": tracker["bad_epochs"],
                "skipped": tracker["skipped"], "lr": optimizer.lr,
                "dropout_generator": dropout_gen.state_dict() if dropout_gen else None,
                "tf_generator": tf_gen.state_dict(),
                "epoch_sums": [tracker["epoch_nll"], tracker["epoch_tokens"],
                               tracker["epoch_gnorm"], tracker["epoch_steps"]]}

    if resuming:       # checked against this model and optimizer; a mismatch names the file
        ts = restore_checkpoint(run_dir / "last.npz", model, optimizer)
        tracker.update(best=ts["best"], bad_epochs=ts["bad_epochs"], skipped=ts["skipped"])
        tracker["epoch_nll"], tracker["epoch_tokens"], tracker["epoch_gnorm"], tracker["epoch_steps"] = ts["epoch_sums"]
        if dropout_gen is not None and ts.get("dropout_generator"):
            dropout_gen.load_state_dict(ts["dropout_generator"])
        tf_gen.load_state_dict(ts["tf_generator"])
        optimizer.lr = ts["lr"]
        trainer.load_state_dict({"epoch": ts["epoch"], "iteration": ts["iteration"],
                                 "iteration_in_epoch": ts["iteration_in_epoch"],
                                 "max_epochs": cfg.epochs})
        _trim_log(run_dir / "log.jsonl", ts["iteration"])
        log(f"resuming {run_dir} at epoch {ts['epoch']}, iteration {ts['iteration']}")

    # ------------------------------------------------------------------ handlers
    progress = _Progress(cfg.quiet)
    interrupted = {"flag": False}

    @trainer.on(Events.EPOCH_STARTED)
    def start_epoch(engine):
        optimizer.lr = _lr_for_epoch(cfg, engine.state.epoch)
        if getattr(engine.state, "iteration_in_epoch", 0) == 0:
            tracker.update(epoch_nll=0.0, epoch_tokens=0, epoch_gnorm=0.0, epoch_steps=0)
        tracker["epoch_start"] = time.time()
        progress.start(engine.state.epoch, engine.state.epoch_length)

    @trainer.on(Events.ITERATION_COMPLETED)
    def after_step(engine):
        progress.update(engine.state.output.get("loss", float("nan")))
        if interrupted["flag"]:
            engine.terminate()

    @trainer.on(Events.EPOCH_COMPLETED)
    def end_epoch(engine):
        progress.close()
        if interrupted["flag"]:
            return
        metrics = evaluate(model, prep, "valid", decode_limit=cfg.valid_decode_limit)
        train_ce = tracker["epoch_nll"] / max(tracker["epoch_tokens"], 1)
        record = {"epoch": engine.state.epoch, "iteration": engine.state.iteration,
                  "lr": optimizer.lr, "train_loss": train_ce, "train_ppl": perplexity(train_ce),
                  **{f"valid_{k}": v for k, v in metrics.items()},
                  "param_norm": param_norm(params),
                  "grad_norm": tracker["epoch_gnorm"] / max(tracker["epoch_steps"], 1),
                  "skipped_batches": tracker["skipped"],
                  "time": round(time.time() - tracker["epoch_start"], 2), **run_info}
        score = metrics[cfg.select_metric]
        improved = _better(cfg.select_metric, score, tracker["best"])
        if improved:
            tracker["best"], tracker["bad_epochs"] = score, 0
        else:
            tracker["bad_epochs"] += 1
        engine.state.iteration_in_epoch = 0
        state = trainer_state()
        # Order matters for a kill at any instant: last.npz is the resume point, so it is written
        # LAST. A kill before it re-runs this epoch on resume (identically), rewriting best.npz
        # and the log line, whose stale copy the resume drops (_trim_log).
        if improved:
            save_checkpoint(run_dir / "best.npz", model, optimizer, state)
        append_line(run_dir / "log.jsonl", json.dumps(record))    # a disk error names the file
        save_checkpoint(run_dir / "last.npz", model, optimizer, state)
        log(f"epoch {record['epoch']:>2}  train ppl {format_ppl(record['train_ppl'])}  valid ppl "
            f"{format_ppl(metrics['ppl'])}  token acc {100 * metrics['token_acc']:5.1f}%  exact "
            f"{100 * metrics['exact_match']:5.1f}%  BLEU {metrics['bleu']:5.1f}  ({record['time']:.0f}s)"
            + ("  *" if improved else ""))
        if cfg.patience is not None and tracker["bad_epochs"] >= cfg.patience:
            log(f"early stopping: no better valid {cfg.select_metric} for {cfg.patience} epochs")
            engine.terminate()

    def on_sigint(signum, frame):
        if interrupted["flag"]:
            raise KeyboardInterrupt
        interrupted["flag"] = True

    old_handler = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    try:
        with guard.run():
            trainer.run(epoch_batches, max_epochs=cfg.epochs)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        progress.close()
    if interrupted["flag"]:
        save_checkpoint(run_dir / "last.npz", model, optimizer, trainer_state())
        log(f"interrupted: saved a resumable checkpoint; continue with: minis2s train --resume {run_dir}")
        raise KeyboardInterrupt

    # ------------------------------------------------------------------ final test
    best = load_checkpoint(run_dir / "best.npz") if (run_dir / "best.npz").exists() else None
    if best is not None:
        model.load_state_dict(best["model"])
    split = "test" if "test" in prep.ids else "valid"
    result = {"run_dir": str(run_dir), "split": split, "time": time.time() - start_time}
    with guard.run():
        for name in [s for s in prep.ids if s.startswith("test")] or [split]:
            result[name] = evaluate(model, prep, name, decode_limit=None)
    return result


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


class _Progress:
    """A tqdm bar per epoch, silent under --quiet or when stderr is not a terminal."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar = None

    def start(self, epoch, total):
        if self.enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=f"epoch {epoch}", leave=False, file=sys.stderr)

    def update(self, loss):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}")

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
