"""The trainer core shared by ``minis2s train`` (seq2seq) and ``minis2s lm train`` (LSTM and
n-gram language models). The two trainers differ only in their batches, their loss and their
validation figures; everything else is here, once::

    RunDirectory   the run directory: created, locked (``runs.RunLock``), checked (a run of
                   another kind or with other settings is refused; the same run stopped before
                   its first checkpoint starts clean), and left as it was when a run fails
                   before its first checkpoint
    StopSignals    SIGINT and SIGTERM: stop at a batch boundary, save, exit 130 / 143; a second
                   signal waits for the save, a third aborts at once (data-parallel: the ranks
                   agree at each step, so all stop at the same one)
    Trainer        epochs of optimisation steps on the ``Engine``: the divergence guard
                   (``minis2s.guard``), clipping, validation, best/last checkpoints in a kill-safe
                   order, resume, early stopping

What a run directory may hold, by kind (``config.json`` says which, in ``"kind"``; seq2seq runs
written before that key existed are recognised by their ``model``/``data``/``train`` entries)::

    seq2seq    config.json src_vocab.json tgt_vocab.json train_sources.npy log.jsonl best.npz
               last.npz
    lm-lstm    config.json vocab.json log.jsonl best.npz last.npz
    lm-transformer  (the same files as lm-lstm)
    lm-ngram   config.json ngram.json

``config.json`` (the run's description) is always written before the first checkpoint, so a
directory holding weights always says what they are.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from grad import backend as B
from grad.nn.utils import clip_grad_norm_

from .checkpoint import CheckpointError, append_line, atomic_write, read_json, save_checkpoint
from .engine import Engine, Events
from .guard import DivergenceGuard, TrainingError, param_norm
from .metrics import perplexity
from .runs import RunLock

KINDS = {"seq2seq": "a translation (seq2seq) run",
         "lm-lstm": "an LSTM language-model run",
         "lm-transformer": "a Transformer language-model run",
         "lm-ngram": "an n-gram language-model run"}
COMMANDS = {"seq2seq": "minis2s train", "lm-lstm": "minis2s lm train",
            "lm-transformer": "minis2s lm train", "lm-ngram": "minis2s lm train"}
RUN_FILES = ("config.json", "src_vocab.json", "tgt_vocab.json", "train_sources.npy", "vocab.json",
             "ngram.json", "log.jsonl", "best.npz", "last.npz")
CHECKPOINTS = ("last.npz", "best.npz", "ngram.json")
# Options that may differ between a run and the command that finds it: they change neither the
# model nor the data nor the optimisation (``--epochs`` is the total a resume goes to).
NOT_SETTINGS = ("epochs", "quiet", "out", "device", "check_every")


class RunDirError(ValueError):
    """The run directory holds something a run must not overwrite or mix with; the message names
    the directory and what it holds."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT or SIGTERM; ``exit_code`` is 128 + the signal's number
    (130, 143) and ``message`` says what was kept."""

    def __init__(self, signum: int, message: str | None = None):
        self.signum = signum
        self.exit_code = 128 + signum
        self.message = message or f"interrupted ({signal.Signals(signum).name})"
        super().__init__(self.message)


class Aborted(Interrupted):
    """A third SIGINT/SIGTERM: stopped at once, during the save; the progress since the last
    checkpoint is lost, that checkpoint is intact."""


def run_kind(config) -> str | None:
    """The kind of run a ``config.json`` describes, or None for one no minis2s run wrote."""
    if not isinstance(config, dict):
        return None
    kind = config.get("kind")
    if kind in KINDS:
        return kind
    if kind is None and {"model", "data", "train"} <= config.keys():
        return "seq2seq"              # written before run directories had a "kind"
    return None


def default_run_dir(base) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that holds no run files."""
    base = Path(base)
    out, k = base, 1
    while any((out / name).exists() for name in RUN_FILES):
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def _settings_differences(saved, settings: dict) -> list[str]:
    """``--option NEW (the run has OLD)`` for each setting that differs, JSON-compared."""
    if not isinstance(saved, dict):
        return ["(its training options are missing)"]
    new = json.loads(json.dumps(settings))
    out = []
    for key in sorted(set(saved) | set(new)):
        if key in NOT_SETTINGS or saved.get(key) == new.get(key):
            continue
        out.append(f"--{key.replace('_', '-')} {new.get(key)!r} (the run has {saved.get(key)!r})")
    return out


# =============================================================================== signals
def _say(text: str) -> None:
    """A line on stderr from a signal handler: ``os.write``, which never re-enters a buffered
    stream the interrupted code may be writing to."""
    try:
        os.write(2, (text + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (schedulers, ``docker stop``, ``kill``) during a run.

    Outside the training loop (preparing data, the final test) a signal stops the run at once:
    there is no unsaved progress. Inside it (``deferring``) the first signal asks the trainer to
    stop after the current step and save a resumable checkpoint; a second one is deferred until
    that save is complete; a third aborts at once (``Aborted``), losing the progress since the
    last checkpoint, which the atomic writes leave intact. The exit code follows the first
    signal: 130 for SIGINT, 143 for SIGTERM."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, last_checkpoint_note=lambda: "no checkpoint had been saved yet"):
        self.received: list[int] = []
        self.deferring = False
        self.aborted = False
        self._note = last_checkpoint_note
        self._old = {}

    @property
    def stop_requested(self) -> bool:
        return bool(self.received)

    @property
    def first(self) -> int:
        return self.received[0]

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return                     # signal handlers can only be set in the main thread
        for signum in self.SIGNALS:
            self._old[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, handler)
        self._old = {}

    @contextmanager
    def deferred(self):
        """The training loop and its checkpoint saves: signals are counted, not raised."""
        self.deferring = True
        try:
            yield self
        finally:
            self.deferring = False

    def _handle(self, signum, frame):
        if self.aborted:
            return                     # already leaving; let the abort clean up undisturbed
        self.received.append(signum)
        if not self.deferring:
            raise Interrupted(self.first)
        if len(self.received) == 2:
            _say("minis2s: saving a resumable checkpoint before stopping; one more interrupt "
                 "aborts at once and loses the progress since the last checkpoint")
        elif len(self.received) >= 3:
            self.aborted = True
            raise Aborted(self.first, f"aborted ({signal.Signals(signum).name}, the third "
                                      f"interrupt): the progress since the last checkpoint is "
                                      f"lost; {self._note()}")


# =============================================================================== run directory
def remove_temporaries(run_dir: Path) -> None:
    """Half-written files (``.NAME.*.tmp``) left by a process killed during an atomic write;
    called with the run lock held, so no live writer owns them."""
    for tmp in Path(run_dir).glob(".*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def _missing_dirs(path: Path) -> list[Path]:
    """The directories ``path.mkdir(parents=True)`` would create, deepest first."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


class RunDirectory:
    """One run's directory, for the length of a ``with`` block::

        with RunDirectory("runs/x", "seq2seq", settings=asdict(cfg)) as run:   # a new run
        with RunDirectory("runs/x", "seq2seq", resume=True) as run:            # --resume

    On entry: creates the directory, takes its lock (``runs.RunLock``), removes temporaries left
    by a killed writer, and checks what is there. A new run refuses (``RunDirError``, exit 2) a
    directory holding run files without a ``config.json``, a ``config.json`` no minis2s run
    wrote, a run of another kind, a run with other settings, or a run that has a checkpoint
    (continue it with ``--resume``); the same run (same kind and settings) stopped before its
    first checkpoint is removed and started clean. A resume refuses a directory that does not
    hold a run of this kind. Signal handling (``StopSignals``) is on for the whole block.

    On exit: a new run that failed before its first checkpoint (bad data, an error, an
    interrupt) removes every file it wrote, the lock file and the directories it created, so a
    failed run leaves nothing behind. A run with a checkpoint keeps everything."""

    def __init__(self, path, kind: str, settings: dict | None = None, resume: bool = False,
                 follower: bool = False):
        if kind not in KINDS:
            raise ValueError(f"unknown run kind {kind!r}")
        self.path, self.kind, self.settings, self.resume = Path(path), kind, settings, resume
        # A follower (rank > 0 of a data-parallel run) reads the directory but never locks,
        # checks or writes it: rank 0 alone does, and the followers wait for it at a barrier.
        self.follower = follower
        self.writes = not follower
        self.signals = StopSignals(self.last_checkpoint_note)
        self._lock = RunLock(self.path)
        self._created: list[Path] = []
        self._lock_existed = True

    @property
    def command(self) -> str:
        return COMMANDS[self.kind]

    def has_checkpoint(self) -> bool:
        return any((self.path / name).exists() for name in CHECKPOINTS)

    def resume_checkpoint(self) -> Path:
        """The checkpoint a resume continues from: ``last.npz``, else ``best.npz`` (a run killed
        between its first two end-of-epoch writes has only that; both hold the same state)."""
        last = self.path / "last.npz"
        return last if last.exists() or not (self.path / "best.npz").exists() else self.path / "best.npz"

    def last_checkpoint_note(self) -> str:
        for name in ("last.npz", "best.npz"):
            if (self.path / name).exists():
                return f"the last checkpoint, {self.path / name}, is intact"
        return "no checkpoint had been saved yet"

    # ------------------------------------------------------------------ enter / exit
    def __enter__(self):
        self.signals.install()
        if self.follower:
            return self
        try:
            self._created = _missing_dirs(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_existed = (self.path / ".lock").exists()
            self._lock.__enter__()
            remove_temporaries(self.path)
            if self.resume:
                self._check_resume()
            else:
                self._check_new()
        except BaseException:
            self._leave(remove_lock=not self._lock_existed)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self.signals.restore()           # from here on, a signal acts as it would without us
        if self.follower:
            return False
        failed_early = exc_type is not None and not self.resume and not self.has_checkpoint()
        if failed_early:
            for name in RUN_FILES:
                try:
                    (self.path / name).unlink()
                except FileNotFoundError:
                    pass
        self._leave(remove_lock=failed_early)
        return False

    def _leave(self, remove_lock: bool) -> None:
        self.signals.restore()
        if remove_lock and self._lock.fd is not None:
            try:
                (self.path / ".lock").unlink()      # while still holding it
            except OSError:
                pass
        self._lock.__exit__(None, None, None)
        for d in self._created:                     # deepest first; only if left empty
            try:
                d.rmdir()
            except OSError:
                break

    # ------------------------------------------------------------------ checks
    def _read_config(self):
        path = self.path / "config.json"
        try:
            return read_json(path)
        except CheckpointError:
            return None

    def _check_resume(self) -> None:
        path = self.path / "config.json"
        config = read_json(path)                    # CheckpointError naming it when missing
        kind = run_kind(config)
        if kind is None:
            raise RunDirError(f"{path} is not the config of a minis2s run; nothing to resume")
        if kind != self.kind:
            how = ("n-gram runs are counted in one pass and cannot be resumed" if kind == "lm-ngram"
                   else f"continue it with: {COMMANDS[kind]} --resume {self.path}")
            raise RunDirError(f"{self.path} holds {KINDS[kind]}, not {KINDS[self.kind]}; {how}")
        if not self.resume_checkpoint().is_file():       # said before any data is read
            raise CheckpointError(f"{self.path / 'last.npz'}: checkpoint not found")

    def _check_new(self) -> None:
        present = [name for name in RUN_FILES if (self.path / name).exists()]
        if not present:
            return
        where, other_out = self.path, "choose another --out"
        if "config.json" not in present:
            raise RunDirError(f"{where} holds {', '.join(present)} without a config.json (files "
                              f"of an unknown run); {self.command} will not overwrite them: "
                              f"{other_out}")
        config = self._read_config()
        kind = run_kind(config)
        if kind is None:
            raise RunDirError(f"{where / 'config.json'} is not the config of a minis2s run; "
                              f"{self.command} will not overwrite it: {other_out}")
        if kind != self.kind:
            raise RunDirError(f"{where} holds {KINDS[kind]}; {self.command} would overwrite it "
                              f"with {KINDS[self.kind]}: {other_out}")
        differences = _settings_differences(config.get("train"), self.settings or {})
        if differences:
            shown = ", ".join(differences[:3]) + (", ..." if len(differences) > 3 else "")
            raise RunDirError(f"{where} holds {KINDS[kind]} with other settings: {shown}; "
                              f"{other_out}")
        if kind == "lm-ngram" and "ngram.json" in present:
            raise RunDirError(f"{where} already holds this n-gram model: {other_out}")
        if "last.npz" in present or "best.npz" in present:
            raise RunDirError(f"{where} already holds a run; continue it with --resume {where} "
                              f"or {other_out}")
        # The same run, stopped before its first checkpoint: nothing of value, start clean.
        for name in present:
            (self.path / name).unlink()


# =============================================================================== the trainer
def trim_log(path: Path, iteration: int) -> None:
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


class Progress:
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


class Trainer:
    """Epochs of optimisation steps, wired on the event ``Engine``::

        EPOCH_STARTED        learning-rate schedule (``lr_for_epoch``; ``lr_for_step`` sets it before
                             every step instead), progress bar
        ITERATION_COMPLETED  progress bar; a stop signal received? stop at this batch boundary
        EPOCH_COMPLETED      validate -> best.npz (if better) -> log line -> last.npz -> early stop

    One step is ``step(batch, epoch=, guard=) -> dict``, the training procedure's own step
    function (``minis2s.train.train_step``: zero grad -> forward -> loss -> backward -> clip ->
    update), which calls the divergence guard's three checks (``minis2s.guard.DivergenceGuard``)
    and returns ``loss`` (per token), ``n_tokens`` and ``grad_norm``, or ``problem`` and
    ``can_skip`` when a check failed. A diverged step stops the run (``TrainingError``,
    exit 1, the last checkpoint untouched) or, under ``nan_policy="skip"``, is skipped when no
    update was applied yet. ``batches(epoch)`` rebuilds an epoch's batches (seeded by the epoch,
    so a resumed run rebuilds the same order); ``validate()`` returns the validation figures (a
    dict holding ``select``); ``describe(record, improved)`` is the line printed per epoch.

    ``last.npz`` (the resume point) is written last at the end of an epoch, so a kill at any
    instant re-runs at most that epoch, identically. A stop signal saves a mid-epoch ``last.npz``
    and raises ``Interrupted``. With ``run=None`` (``lm compare``) nothing is written and the
    best weights are kept in memory.

    Data-parallel (``comm``, a ``minis2s.distributed.Communicator``): each step runs on this
    rank's shard of the global batch (``_step_distributed``: ``step(shard, comm=comm, ...)``
    divides by the global token count and sums the gradients over the ranks); the ranks start from rank 0's parameters, compare
    parameter checksums every ``check_every`` steps and before every checkpoint, and stop
    together. Only a ``run`` that ``writes`` (rank 0's) writes files; the others wait at a
    barrier after each epoch's checkpoints. ``seed`` seeds the ranks' random streams."""

    def __init__(self, model, optimizer, *, step, batches, validate, describe, epochs: int,
                 run: RunDirectory | None = None, nan_policy: str = "stop",
                 skip_option: bool = False, select: str = "loss",
                 higher_is_better: bool = False, patience: int | None = None, lr_for_epoch=None,
                 lr_for_step=None, generators: dict | None = None, quiet: bool = False,
                 log=print, run_info: dict | None = None, comm=None, check_every: int = 100,
                 seed: int = 0, max_grad_norm: float | None = None):
        self.model, self.optimizer, self.run = model, optimizer, run
        self.step, self.batches, self.validate, self.describe = step, batches, validate, describe
        self.epochs = epochs
        self.nan_policy, self.skip_option = nan_policy, skip_option     # is --nan-policy an option?
        self.select, self.higher_is_better, self.patience = select, higher_is_better, patience
        self.lr_for_epoch, self.generators = lr_for_epoch, dict(generators or {})
        self.lr_for_step = lr_for_step        # iteration (from 1) -> lr, set before each step
        self.log, self.run_info = log, dict(run_info or {})      # run_info: added to log lines
        self.params = list(model.parameters())
        self.guard = DivergenceGuard()
        # Data-parallel (minis2s.distributed): the communicator, the steps between parameter
        # checksum comparisons, the seed the ranks' random streams derive from, and the stop
        # decision the ranks took together at the last step.
        self.comm, self.check_every, self.seed = comm, check_every, seed
        self.max_grad_norm = max_grad_norm       # the clipping of an empty shard's step
        self._stop_all = False
        self.best_state = None             # in-memory best weights when run is None
        self.tracker = {"best": None, "best_loss": None, "bad_epochs": 0, "skipped": 0, "epoch_nll": 0.0,
                        "epoch_tokens": 0, "epoch_gnorm": 0.0, "epoch_steps": 0,
                        "epoch_start": time.time()}
        self.progress = Progress(quiet)
        self.engine = Engine(self._step)
        self.engine.add_event_handler(Events.EPOCH_STARTED, self._start_epoch)
        self.engine.add_event_handler(Events.ITERATION_COMPLETED, self._after_step)
        self.engine.add_event_handler(Events.EPOCH_COMPLETED, self._end_epoch)

    # ------------------------------------------------------------------ state
    @property
    def best(self):
        return self.tracker["best"]

    def state(self) -> dict:
        """The trainer's part of a checkpoint: position, best score, generators, epoch sums."""
        st, t = self.engine.state, self.tracker
        out = {"epoch": st.epoch, "iteration": st.iteration,
               "iteration_in_epoch": getattr(st, "iteration_in_epoch", 0),
               "best": t["best"], "best_loss": t["best_loss"], "bad_epochs": t["bad_epochs"],
               "skipped": t["skipped"], "lr": self.optimizer.lr, "max_epochs": self.epochs}   # the total a resume keeps
        for name, gen in self.generators.items():
            out[name] = gen.state_dict() if gen is not None else None
        out["epoch_sums"] = [t["epoch_nll"], t["epoch_tokens"], t["epoch_gnorm"], t["epoch_steps"]]
        return out

    def restore(self, path) -> dict:
        """Continue from the checkpoint ``path``: weights, optimizer, position, best score,
        generators; log lines after it are dropped. Returns the trainer state. Everything is
        checked first (``minis2s.validate.restore_checkpoint``: shapes against this model, the
        optimizer's kind and state, every trainer-state entry), so a checkpoint of another run,
        or of a run written before its kind could resume, is a ``CheckpointError`` naming
        ``path``, raised before the model is changed."""
        from .validate import SEQ2SEQ_TRAINER, SEQ2SEQ_TRAINER_OPTIONAL, restore_checkpoint
        generator_check = SEQ2SEQ_TRAINER["tf_generator"]
        required = {k: v for k, v in SEQ2SEQ_TRAINER.items() if not k.endswith("_generator")}
        required.update({name: generator_check for name, gen in self.generators.items()
                         if gen is not None})
        optional = {name: SEQ2SEQ_TRAINER_OPTIONAL["dropout_generator"]
                    for name, gen in self.generators.items() if gen is None}
        optional["best_loss"] = SEQ2SEQ_TRAINER_OPTIONAL["best_loss"]
        ts = restore_checkpoint(path, self.model, self.optimizer, required, optional)
        self.tracker.update(best=ts["best"], best_loss=ts.get("best_loss"),   # absent in older checkpoints
                            bad_epochs=ts["bad_epochs"], skipped=ts["skipped"])
        (self.tracker["epoch_nll"], self.tracker["epoch_tokens"], self.tracker["epoch_gnorm"],
         self.tracker["epoch_steps"]) = ts["epoch_sums"]
        for name, gen in self.generators.items():
            if gen is not None and ts.get(name):
                gen.load_state_dict(ts[name])
        self.optimizer.lr = ts["lr"]
        self.engine.load_state_dict({"epoch": ts["epoch"], "iteration": ts["iteration"],
                                     "iteration_in_epoch": ts["iteration_in_epoch"],
                                     "max_epochs": self.epochs})
        if self.run is not None and self.run.writes:
            trim_log(self.run.path / "log.jsonl", ts["iteration"])
        return ts

    def _save(self, name: str, state: dict) -> None:
        if self.comm is not None:      # the ranks agree before rank 0 writes what they share
            self.comm.check_parameters(self.params, f"the checkpoint {name}")
        if self.run.writes:
            save_checkpoint(self.run.path / name, self.model, self.optimizer, state)

    # ------------------------------------------------------------------ one step
    def _step(self, engine, batch):
        """The engine's process function: the trainer's ``step`` (``minis2s.train.train_step``
        or ``minis2s.lm.training.train_step``) under the divergence guard, then the epoch sums.
        Data-parallel: ``_step_distributed`` on this rank's shard of the batch."""
        if self.lr_for_step is not None:
            self.optimizer.lr = self.lr_for_step(engine.state.iteration)
        if self.comm is not None:
            return self._step_distributed(engine, self.comm.shard(batch))
        with self.guard.step():
            out = self.step(batch, epoch=engine.state.epoch, guard=self.guard)
        if "problem" in out:
            return self._diverged(engine, out["problem"], can_skip=out["can_skip"])
        value, n_tokens, gnorm = out["loss"], out["n_tokens"], out["grad_norm"]
        self._count(value, n_tokens, gnorm)
        return {"loss": value, "grad_norm": gnorm}

    def _count(self, value: float, n_tokens: int, gnorm: float) -> None:
        """Add a step to the epoch's sums (the train loss is token-weighted)."""
        t = self.tracker
        t["epoch_nll"] += value * n_tokens
        t["epoch_tokens"] += n_tokens
        t["epoch_gnorm"] += gnorm
        t["epoch_steps"] += 1

    def _step_distributed(self, engine, shard):
        """One data-parallel step on this rank's ``shard`` of the global batch: the training
        procedure's own ``step`` with ``comm`` (``minis2s.train.train_step``: the shard's summed
        loss divided by the GLOBAL target-token count, ``comm.sum_count``; the gradients summed
        over the ranks by one Allreduce, ``comm.sum_gradients``, before clipping by the global
        norm) and a guard whose three checks all ranks decide together
        (``minis2s.distributed.CollectiveGuard``). So every rank makes the same collective calls
        in the same order, and a non-finite loss (or an overflow) on one rank stops every rank at
        the same step with the same message; no rank is left waiting in a collective. An empty
        shard makes the same calls with zero tokens and no gradient of its own (``_empty_step``)."""
        from .distributed import CollectiveGuard
        comm = self.comm
        guard = CollectiveGuard(self.guard, comm, self._local_stop)
        with self.guard.step():
            if len(shard):
                out = self.step(shard, epoch=engine.state.epoch, guard=guard, comm=comm)
            else:
                out = self._empty_step(guard)
        self._stop_all = guard.stop_all
        if "problem" in out:
            return self._diverged(engine, out["problem"], can_skip=out["can_skip"])
        n_tokens = comm.sum_count(out["n_tokens"])                 # the global batch's tokens
        self._count(guard.value, n_tokens, out["grad_norm"])
        if self.check_every and engine.state.iteration % self.check_every == 0:
            comm.check_parameters(self.params, f"iteration {engine.state.iteration}")
        return {"loss": guard.value, "grad_norm": out["grad_norm"]}

    def _empty_step(self, guard) -> dict:
        """A rank with no rows in this global batch (fewer sentences than ranks): the collective
        calls of ``minis2s.train.train_step``, in its order, with zero tokens and no gradient of
        its own; then the same clipping and update as every other rank."""
        comm = self.comm
        self.model.train()
        self.optimizer.zero_grad()
        comm.sum_count(0)                                          # the global token count
        if (problem := guard.check_loss(0.0)):
            return {"loss": 0.0, "n_tokens": 0, "problem": problem, "can_skip": True}
        comm.sum_gradients(self.params)                            # the other ranks' gradients
        grad_norm = clip_grad_norm_(self.params, self.max_grad_norm).item()
        if (problem := guard.check_grad_norm(grad_norm)):
            self.optimizer.zero_grad()
            return {"loss": 0.0, "n_tokens": 0, "problem": problem, "can_skip": True}
        self.optimizer.step()
        if (problem := guard.check_params(self.model.named_parameters())):
            return {"loss": 0.0, "n_tokens": 0, "problem": problem, "can_skip": False}
        return {"loss": 0.0, "n_tokens": 0, "grad_norm": grad_norm}

    def _diverged(self, engine, what: str, can_skip: bool = True):
        """Stop (exit 1, last good checkpoint untouched) or, under --nan-policy skip, skip."""
        where = f"epoch {engine.state.epoch}, iteration {engine.state.iteration}"
        if self.nan_policy == "skip" and can_skip:
            self.tracker["skipped"] += 1
            self.guard.warn_once("skip", f"skipped the batch at {where}: {what} (--nan-policy "
                                         "skip; further skipped batches are counted in log.jsonl, "
                                         "not shown)")
            return {"loss": float("nan"), "skipped": True}
        saved = ("no checkpoint had been saved yet" if self.run is None
                 or not (self.run.path / "last.npz").exists()
                 else f"the last good checkpoint in {self.run.path} is untouched")
        if not self.skip_option:
            hint = "try a lower --lr"
        elif can_skip:
            hint = "try a lower --lr, or --nan-policy skip"
        else:
            hint = "--nan-policy skip cannot undo an update that was already applied; try a lower --lr"
        error = TrainingError(f"{what} at {where}; {saved} ({hint})")
        error.collective = self.comm is not None      # every rank decided the same, together
        raise error

    # ------------------------------------------------------------------ handlers
    def _local_stop(self) -> bool:
        return self.run is not None and self.run.signals.stop_requested

    def _stop_requested(self) -> bool:
        """Stop at this batch boundary? Data-parallel: when any rank was asked to, as the ranks
        agreed at the last step (each rank's own signal may arrive a step apart)."""
        if self.comm is not None:
            return self._stop_all
        return self._local_stop()

    def _start_epoch(self, engine):
        if self.lr_for_epoch is not None:
            self.optimizer.lr = self.lr_for_epoch(engine.state.epoch)
        if getattr(engine.state, "iteration_in_epoch", 0) == 0:
            self.tracker.update(epoch_nll=0.0, epoch_tokens=0, epoch_gnorm=0.0, epoch_steps=0)
        self.tracker["epoch_start"] = time.time()
        self.progress.start(engine.state.epoch, engine.state.epoch_length)

    def _after_step(self, engine):
        self.progress.update(engine.state.output.get("loss", float("nan")))
        if self._stop_requested():
            engine.terminate()

    def _end_epoch(self, engine):
        self.progress.close()
        t = self.tracker
        metrics = self.validate()
        train_ce = t["epoch_nll"] / max(t["epoch_tokens"], 1)
        record = {"epoch": engine.state.epoch, "iteration": engine.state.iteration,
                  "lr": self.optimizer.lr, "train_loss": train_ce,
                  "train_ppl": perplexity(train_ce),
                  **{f"valid_{k}": v for k, v in metrics.items()},
                  "param_norm": param_norm(self.params),
                  "grad_norm": t["epoch_gnorm"] / max(t["epoch_steps"], 1),
                  "skipped_batches": t["skipped"],
                  "time": round(time.time() - t["epoch_start"], 2), **self.run_info}
        score, loss = metrics[self.select], metrics.get("loss")
        improved = (t["best"] is None or (score > t["best"] if self.higher_is_better
                                          else score < t["best"])
                    # a tie on exact match or BLEU (both 0 early in training, or the same few
                    # sentences wrong) goes to the lower valid loss
                    or (score == t["best"] and loss is not None and t["best_loss"] is not None
                        and loss < t["best_loss"]))
        if improved:
            t["best"], t["best_loss"], t["bad_epochs"] = score, loss, 0
        else:
            t["bad_epochs"] += 1
        engine.state.iteration_in_epoch = 0
        state = self.state()
        if self.run is None:
            if improved:
                self.best_state = {k: B.xp.asarray(v, copy=True)
                                   for k, v in self.model.state_dict().items()}
        else:
            # Order matters for a kill at any instant: last.npz is the resume point, so it is
            # written LAST. A kill before it re-runs this epoch on resume (identically),
            # rewriting best.npz and the log line, whose stale copy the resume drops (trim_log).
            if improved:
                self._save("best.npz", state)
            if self.run.writes:
                append_line(self.run.path / "log.jsonl", json.dumps(record))   # a disk error names it
            self._save("last.npz", state)
            if self.comm is not None:
                self.comm.barrier()     # the other ranks wait while rank 0 writes
        self.log(self.describe(record, improved))
        if self.patience is not None and t["bad_epochs"] >= self.patience:
            self.log(f"early stopping: no better valid {self.select.replace('_', ' ')} for {self.patience} epochs")
            engine.terminate()
        if self._stop_requested():
            engine.terminate()          # the epoch's checkpoint is the resumable one

    # ------------------------------------------------------------------ the run
    def fit(self) -> None:
        """Train up to ``epochs`` epochs (from where ``restore`` left the position). On a stop
        signal: save a resumable ``last.npz`` and raise ``Interrupted`` (exit 130 / 143)."""
        if self.comm is not None:
            self._start_distributed()
        if self.run is None:
            try:
                with self.guard.run():
                    self.engine.run(self.batches, max_epochs=self.epochs)
            finally:
                self.progress.close()
            return
        signals = self.run.signals
        with signals.deferred():
            try:
                with self.guard.run():
                    self.engine.run(self.batches, max_epochs=self.epochs)
            finally:
                self.progress.close()
            if self.comm is not None:    # a signal after the last step: agreed on once more
                self._stop_all = self.comm.any(self._stop_all or self._local_stop())
            if self._stop_requested():
                self._save("last.npz", self.state())
                if self.comm is not None:
                    self.comm.barrier()
        if self._stop_requested():
            first = signals.first if signals.received else signal.SIGTERM
            st = self.engine.state
            error = Interrupted(first, f"interrupted ({signal.Signals(first).name}): "
                                             f"saved a resumable checkpoint at epoch {st.epoch}, "
                                             f"iteration {st.iteration}; continue with: "
                                             f"{self.run.command} --resume {self.run.path}")
            error.collective = self.comm is not None
            raise error

    def _start_distributed(self) -> None:
        """Before the first step of a data-parallel run (new or resumed): every rank takes rank
        0's parameters, and each rank's random streams (dropout, scheduled sampling) are seeded
        from (seed, rank, the iteration the run starts at)."""
        from .distributed import rank_seed
        self.comm.broadcast_parameters(self.params)
        for gen in self.generators.values():
            if gen is not None:
                gen.manual_seed(rank_seed(self.seed, self.comm.rank, self.engine.state.iteration))
