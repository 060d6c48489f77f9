"""The seq2seq training procedure: its batches, its loss and its validation, on the shared
trainer core (``minis2s.trainer_core``, also used by ``minis2s lm train``).

Two engines, as in Ignite: the *trainer* (``trainer_core.Trainer``) runs one optimisation step
per batch; at the end of each epoch a handler runs the *evaluator* (``make_evaluator``, inside
``evaluate``) over the validation split. The handlers, registered in ``trainer_core.Trainer``::

    EPOCH_STARTED        learning-rate schedule (halving from --lr-decay-start)
    ITERATION_COMPLETED  progress bar; Ctrl-C or SIGTERM received? stop cleanly at this batch
    EPOCH_COMPLETED      validate -> save best (if better) -> log a JSON line -> save last
                         (the resume point, written last) -> early stopping

After the run, the best checkpoint is evaluated on the test split(s).

One step is ``train_step`` (read it first): zero the gradients -> forward with teacher forcing
-> cross-entropy per target token (PAD excluded) -> backward -> clip the global gradient norm ->
optimizer step. ``evaluate`` scores a split. With ``grad.reference_mode()`` around them
(``minis2s train --reference``) every fused fast path runs its composed, op-by-op twin.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

import grad
from grad import backend as B
from grad import optim
from grad.tensor import Tensor, no_grad

from grad.nn.utils import clip_grad_norm_, eval_mode

from .checkpoint import FORMAT_VERSION, load_checkpoint, read_json, write_json
from .data.vocab import PAD
from .engine import Engine, Events
from .metrics import CorpusStats, bleu_label, format_ppl
from .models import Seq2Seq
from .models.transformer import TransformerSeq2Seq
from .runs import prepare_data, Prepared
from .validate import resume_config
from .trainer_core import (RunDirectory, Trainer, TrainingError, default_run_dir,  # noqa: F401 (re-exported)
                           trim_log as _trim_log)  # noqa: F401
from .tf_schedule import tf_ratio_for_epoch


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
    arch: str = "lstm"                     # "lstm" (Seq2Seq) or "transformer" (TransformerSeq2Seq)
    emb_size: int | None = None            # None: 64 (lstm); d_model (transformer)
    hidden_size: int = 128                 # the Transformer's d_model
    layers: int = 1
    dropout: float = 0.1
    attention: str = "general"
    input_feeding: bool = True
    heads: int | None = None               # transformer only; None: its default (below)
    encoder_layers: int | None = None
    decoder_layers: int | None = None
    ff_size: int | None = None
    positions: str | None = None
    share_embeddings: bool = False
    norm_first: bool = False               # transformer: pre-norm layers (default post-norm)
    warmup_steps: int | None = None
    # optimisation
    epochs: int | None = None              # None: the architecture's default (ARCH_DEFAULTS)
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float | None = None                # None: 2e-3 (lstm); 2e-3, the peak (transformer)
    lr_decay_start: int | None = None
    patience: int | None = None
    label_smoothing: float | None = None   # None: 0 (lstm); 0.1 (transformer)
    tf_ratio: float = 1.0
    tf_schedule: str = "constant"          # minis2s.tf_schedule: how tf_ratio decays by epoch
    tf_decay: float | None = None
    tf_min: float = 0.0
    max_grad_norm: float = 5.0
    nan_policy: str = "stop"
    select_metric: str | None = None       # None: "loss" (lstm); "bleu" (transformer)
    seed: int = 0
    dtype: str = "float32"                 # of the weights and optimizer state (float64: checking)
    device: str = "cpu"
    out: str | None = None
    quiet: bool = False
    n_train: int | None = None             # built-in tasks: override the split sizes
    n_valid: int | None = None
    n_test: int | None = None
    valid_decode_limit: int | None = 1000  # sentences decoded per validation (None: all)
    check_every: int = 100                 # data-parallel: steps between parameter checksums
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        """Fill the architecture's defaults and refuse options that mean nothing for it."""
        if self.arch not in ARCH_DEFAULTS:
            raise ValueError(f"--arch must be 'lstm' or 'transformer', got {self.arch!r}")
        for key, value in ARCH_DEFAULTS[self.arch].items():
            if getattr(self, key) is None:
                setattr(self, key, self.hidden_size if value == "d_model" else
                        4 * self.hidden_size if value == "4 d_model" else value)
        wrong = arch_conflicts(self)
        if wrong:
            other = "an LSTM" if self.arch == "transformer" else "a Transformer"
            raise ValueError(f"--arch {self.arch}: {', '.join(wrong)} only apply to {other} "
                             f"model; leave {'it' if len(wrong) == 1 else 'them'} out")
        if self.arch == "transformer" and self.hidden_size % self.heads:
            raise ValueError(f"--hidden-size (d_model, {self.hidden_size}) must be divisible by "
                             f"--heads ({self.heads})")


# Per architecture, the defaults of the options left None ("d_model": --hidden-size).
ARCH_DEFAULTS = {
    "lstm": {"emb_size": 64, "lr": 2e-3, "label_smoothing": 0.0, "epochs": 5,
             "select_metric": "loss"},
    # The Transformer's optimisation defaults were tuned on the default dates run (20000 pairs,
    # batch 64: 313 steps an epoch, so the warm-up ends within the first) and checked on the
    # other tasks: a peak of 2e-3 after 150 steps, 6 epochs (3e-3 suits dates but stalls the
    # addition task for four epochs). The best epoch is chosen by valid BLEU: between late
    # epochs the valid loss differs in its fourth digit and picked an earlier, worse epoch,
    # while BLEU tells them apart; BLEU also stays meaningful on real data, where exact match
    # sits near 0 (README, "minis2s train --arch transformer").
    "transformer": {"emb_size": "d_model", "lr": 2e-3, "label_smoothing": 0.1, "heads": 4,
                    "encoder_layers": 3, "decoder_layers": 3, "ff_size": "4 d_model",
                    "positions": "sinusoidal", "warmup_steps": 150, "epochs": 6,
                    "select_metric": "bleu"},
}
TRANSFORMER_ONLY = ("heads", "encoder_layers", "decoder_layers", "ff_size", "positions",
                    "warmup_steps")


def arch_conflicts(cfg) -> list[str]:
    """The options of ``cfg`` (as command-line flags) that mean nothing for its architecture."""
    if cfg.arch == "lstm":
        wrong = [f"--{n.replace('_', '-')}" for n in TRANSFORMER_ONLY if getattr(cfg, n) is not None]
        return wrong + [f"--{n.replace('_', '-')}" for n in ("share_embeddings", "norm_first")
                        if getattr(cfg, n)]
    wrong = []
    if not cfg.input_feeding:
        wrong.append("--no-input-feeding")
    if cfg.attention != "general":
        wrong.append("--attention")
    if cfg.emb_size != cfg.hidden_size:
        wrong.append("--emb-size (other than --hidden-size, d_model)")
    if cfg.tf_ratio < 1.0 or cfg.tf_schedule != "constant":
        wrong.append("--tf-ratio below 1 / --tf-schedule")
    if cfg.layers != 1:
        wrong.append("--layers (use --encoder-layers / --decoder-layers)")
    if cfg.lr_decay_start is not None:
        wrong.append("--lr-decay-start (the Transformer has its warm-up schedule)")
    return wrong


def inverse_sqrt_lr(peak: float, warmup_steps: int, step: int) -> float:
    """The inverse-square-root schedule of "Attention is all you need", scaled so that its
    top is ``peak``: a linear rise over ``warmup_steps`` steps, then decay as ``1 / sqrt(step)``::

        lr(step) = peak * min(step / warmup, sqrt(warmup / step))        (step = 1, 2, ...)
    """
    step = max(step, 1)
    return peak * min(step / warmup_steps, math.sqrt(warmup_steps / step))


def _lr_for_epoch(cfg: TrainConfig, epoch: int) -> float:
    """Constant learning rate, halved once per epoch from ``lr_decay_start`` on (epochs from 1)."""
    if cfg.lr_decay_start is None or epoch < cfg.lr_decay_start:
        return cfg.lr
    return cfg.lr * 0.5 ** (epoch - cfg.lr_decay_start + 1)


DTYPES = ("float32", "float64")


def build_model(model_cfg: dict, seed: int, dtype: str = "float32"):
    """The model of ``model_cfg`` (a ``Seq2Seq``, or a ``TransformerSeq2Seq`` when
    ``model_cfg["arch"]`` says so), its weights drawn from ``seed`` (the same draws in either
    dtype) and held in ``dtype``."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    cfg = dict(model_cfg)
    kind = TransformerSeq2Seq if cfg.pop("arch", "lstm") == "transformer" else Seq2Seq
    model = kind(**cfg, generator=grad.Generator(seed))
    return model.to(dtype) if dtype != "float32" else model


def model_config(cfg: TrainConfig, src_vocab, tgt_vocab) -> dict:
    """The ``model`` entry of a run's config.json: the model's keyword arguments."""
    if cfg.arch == "transformer":
        if cfg.share_embeddings and list(src_vocab.itos) != list(tgt_vocab.itos):
            raise ValueError("--share-embeddings needs one vocabulary for both sides; this "
                             f"data has {len(src_vocab)} source and {len(tgt_vocab)} target "
                             "tokens, not the same ones")
        return dict(arch="transformer", src_vocab_size=len(src_vocab),
                    tgt_vocab_size=len(tgt_vocab), d_model=cfg.hidden_size, nhead=cfg.heads,
                    num_encoder_layers=cfg.encoder_layers, num_decoder_layers=cfg.decoder_layers,
                    dim_feedforward=cfg.ff_size, dropout=cfg.dropout, pad_idx=PAD,
                    positions=cfg.positions, max_positions=max(512, 2 * cfg.max_length + 10),
                    share_embeddings=cfg.share_embeddings, norm_first=cfg.norm_first)
    return dict(src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab),
                emb_size=cfg.emb_size, hidden_size=cfg.hidden_size, num_layers=cfg.layers,
                dropout=cfg.dropout, pad_idx=PAD,
                attention=None if cfg.attention == "none" else cfg.attention,
                input_feeding=cfg.input_feeding)


def _lr_schedule(cfg: TrainConfig) -> dict:
    """The trainer's learning-rate hook: per epoch (LSTM: constant, halving from
    --lr-decay-start) or per step (Transformer: warm-up, then inverse square root)."""
    if cfg.arch == "transformer":
        return {"lr_for_step": lambda step: inverse_sqrt_lr(cfg.lr, cfg.warmup_steps, step)}
    return {"lr_for_epoch": lambda epoch: _lr_for_epoch(cfg, epoch)}


def _dropout_generator(model):
    return model.dropout_generator if isinstance(model, TransformerSeq2Seq) \
        else model.decoder.dropout_generator


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


# =============================================================================== one step
def train_step(model, optimizer, batch, cfg: TrainConfig, comm=None, *, epoch: int = 1,
               tf_generator=None, guard=None) -> dict:
    """One optimisation step on one batch, in the order it happens. A breakpoint here, under
    ``grad.reference_mode()``, steps through the whole readable path.

    ``batch``: a ``minis2s.data.batching.Batch`` (host arrays); ``cfg``: its ``tf_ratio`` /
    ``tf_schedule`` (with ``epoch``), ``label_smoothing`` and ``max_grad_norm`` are used;
    ``tf_generator`` draws the scheduled-sampling choices. ``comm`` (several processes): the loss
    is divided by the target tokens of ALL processes' batches (``comm.sum_count``) and the
    gradients are summed over them (``comm.sum_gradients``) before clipping; None: one process.

    ``guard`` (``minis2s.guard.DivergenceGuard``, the trainer's): checked after the loss, after
    clipping and after the update; a failed check stops the step and returns ``problem`` (what
    went wrong) and ``can_skip`` (False once the update was applied). Otherwise returns
    ``{"loss": cross-entropy per target token, "n_tokens": this batch's target tokens,
    "grad_norm": the norm before clipping}``.
    """
    model.train()                                                      # dropout on
    params = list(model.parameters())
    tf_ratio = tf_ratio_for_epoch(cfg, epoch)                          # teacher forcing, this epoch
    optimizer.zero_grad()                                              # 1. zero the gradients
    src, src_lengths, tgt_in, tgt_out = to_device(batch)               # (B, S), (B,), (B, T), (B, T)
    total = model.loss(src, src_lengths, tgt_in, tgt_out,              # 2. forward, 3. loss (summed)
                       tf_ratio=tf_ratio, generator=tf_generator,
                       label_smoothing=cfg.label_smoothing, reduction="sum")
    n_tokens = batch.n_tokens
    if comm is not None:
        n_tokens = comm.sum_count(n_tokens)                            # every process's tokens
    loss = total / float(n_tokens)                                     # per target token
    value = loss.item()
    if guard is not None and (problem := guard.check_loss(value)):
        return {"loss": value, "n_tokens": batch.n_tokens, "problem": problem, "can_skip": True}
    loss.backward()                                                    # 4. backward
    if comm is not None:
        comm.sum_gradients(params)
    grad_norm = clip_grad_norm_(params, cfg.max_grad_norm).item()      # 5. clip
    if guard is not None and (problem := guard.check_grad_norm(grad_norm)):
        optimizer.zero_grad()
        return {"loss": value, "n_tokens": batch.n_tokens, "problem": problem, "can_skip": True}
    optimizer.step()                                                   # 6. update
    if guard is not None and (problem := guard.check_params(model.named_parameters())):
        return {"loss": value, "n_tokens": batch.n_tokens, "problem": problem, "can_skip": False}
    return {"loss": value, "n_tokens": batch.n_tokens, "grad_norm": grad_norm}


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
                                            ignore_index=model.pad_idx, reduction="sum").item()
        pred = B.to_numpy(xp.argmax(logits.data, axis=-1))                    # (B, T) host
        mask = batch.tgt_out != model.pad_idx                                 # PAD excluded
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
             beam_size: int = 1, max_len: int | None = None, length_penalty: float = 0.0,
             comm=None) -> dict:
    """Cross-entropy and perplexity per target token (teacher-forced, PAD excluded, EOS
    counted) and token accuracy over the WHOLE split, from one run of the evaluator engine
    (``make_evaluator``); exact match and BLEU of greedy (or beam) outputs on the first
    ``decode_limit`` sentences (``decoding`` in the result says how they were decoded).
    The figures are ``minis2s.metrics.CorpusStats``'s.

    With ``comm`` (a data-parallel run) the ranks share the work: each scores every N-th batch
    and decodes every N-th chunk of sentences; the sums are added up and the outputs gathered,
    so every rank returns the figures of the whole split."""
    with eval_mode(model):
        return _evaluate(model, prep, split, batch_size, decode_limit, beam_size, max_len,
                         length_penalty, comm)


def _evaluate(model, prep, split, batch_size, decode_limit, beam_size, max_len, length_penalty,
              comm=None):
    from .data.batching import collate, make_batches
    from .metrics import corpus_bleu, decoding_label
    src_ids, tgt_ids = prep.ids[split]
    n = len(src_ids)
    lengths = [max(len(s), len(t)) for s, t in zip(src_ids, tgt_ids)]
    positions = make_batches(lengths, batch_size, shuffle=False)
    if comm is not None:                 # every N-th batch is this rank's
        positions = positions[comm.rank::comm.size]
    batches = [collate(src_ids, tgt_ids, idx) for idx in positions]
    sums = (make_evaluator(model).run(batches, max_epochs=1).metrics if batches
            else {"nll": 0.0, "tokens": 0, "correct": 0})
    if comm is not None:                 # the sums over every rank's batches
        nll, tokens, correct = comm.sum_values([sums["nll"], sums["tokens"], sums["correct"]])
        sums = {"nll": nll, "tokens": int(tokens), "correct": int(correct)}
    stats = CorpusStats(nll_sum=sums["nll"], n_tokens=sums["tokens"], n_correct=sums["correct"])
    metrics = {"loss": stats.cross_entropy, "ppl": stats.perplexity, "token_acc": stats.token_accuracy}
    limit = n if decode_limit is None else min(n, decode_limit)
    hyps, refs, decoded = [], [], []
    order = list(range(limit))
    max_len = max_len or (max((len(t) for t in tgt_ids[:limit]), default=1) + 5)
    starts = list(range(0, limit, batch_size))
    if comm is not None:
        starts = starts[comm.rank::comm.size]
    for start in starts:
        idx = order[start:start + batch_size]
        batch = collate(src_ids, tgt_ids, idx)
        if beam_size > 1:
            out = model.beam_search(batch.src, batch.src_lengths, beam_size=beam_size, max_len=max_len,
                                    length_penalty=length_penalty)
            tokens = out.tokens[:, 0]
        else:
            tokens = model.greedy(batch.src, batch.src_lengths, max_len=max_len).tokens
        for row, i in zip(tokens, idx):
            hyps.append(prep.tgt_vocab.decode(row.tolist()))
            refs.append(prep.tgt_vocab.decode(tgt_ids[i]))
            decoded.append(i)
    if comm is not None:         # every rank's chunks, back in sentence order
        rows = sorted(row for part in comm.allgather(list(zip(decoded, hyps, refs))) for row in part)
        hyps, refs = [h for _, h, _ in rows], [r for _, _, r in rows]
    metrics["exact_match"] = sum(h == r for h, r in zip(hyps, refs)) / max(limit, 1)
    metrics["bleu"] = corpus_bleu(hyps, refs) if limit else 0.0
    metrics["decoded"] = limit
    metrics["decoding"] = decoding_label(beam_size, length_penalty)
    metrics["bleu_label"] = bleu_label(prep.tgt_tokenizer.name)
    return metrics


# =============================================================================== training
def fit(cfg: TrainConfig, resume: str | None = None, log=print, run_info: dict | None = None,
        comm=None) -> dict:
    """Train a model as ``cfg`` says (or continue the run in ``resume``); returns a summary with
    the test metrics and the run directory. ``run_info`` (e.g. the BLAS thread count) is
    recorded in every log.jsonl line; it describes how this process ran, not the model, so a
    run may resume with other values. The directory rules, the lock, signals, checkpoints and
    resume are the trainer core's (``minis2s.trainer_core``).

    ``comm`` (``minis2s.distributed.Communicator``): a data-parallel run, this process being one
    of its ranks. Rank 0 alone takes the directory (lock, checks, every write); the others follow
    it (``RunDirectory(follower=True)``) in the directory rank 0 chose."""
    if cfg.device == "cuda":
        B.use("cupy")          # raises a clear BackendError when no GPU is usable
    if comm is not None and not comm.is_root:
        path = comm.bcast(None)          # rank 0's directory, once rank 0 holds it
        run = RunDirectory(path, "seq2seq", resume=bool(resume), follower=True)
    elif resume:
        run = RunDirectory(resume, "seq2seq", resume=True)
    else:
        run = RunDirectory(_new_run_dir(cfg), "seq2seq", settings=asdict(cfg))
    with run:
        if comm is not None and comm.is_root:
            comm.bcast(str(run.path))
        return _fit_locked(cfg, run, log, run_info or {}, comm)


def _new_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    base = Path("runs") / (cfg.task if cfg.task and not (cfg.train or cfg.train_src) else "custom")
    return default_run_dir(base)


def _resume_epochs(given: int | None, ckpt_path: Path, configured) -> int:
    """The total epochs of a resumed run: ``--epochs`` if given, else the total it was last
    run with (its checkpoint's ``max_epochs``; its config for older checkpoints). A total below
    the epoch already reached is refused in the command's own terms."""
    state = load_checkpoint(ckpt_path).get("trainer", {}) if Path(ckpt_path).exists() else {}
    saved_total = state.get("max_epochs")
    if not (isinstance(saved_total, int) and saved_total > 0):
        saved_total = configured
    epochs = given if given is not None else saved_total
    reached = state.get("epoch", 0) if isinstance(state.get("epoch"), int) else 0
    if epochs is None:
        return max(reached, 1)
    if epochs < reached:
        raise ValueError(f"--epochs {epochs} is below the epoch this run already reached "
                         f"({reached}); give --epochs {reached} or more")
    return epochs


def _fit_locked(cfg: TrainConfig, run: RunDirectory, log, run_info: dict, comm=None) -> dict:
    start_time = time.time()
    run_dir, ckpt_path = run.path, None
    if run.resume:
        saved = resume_config(read_json(run_dir / "config.json"), run_dir / "config.json",
                              [f.name for f in fields(TrainConfig)])
        ckpt_path = run.resume_checkpoint()
        epochs = _resume_epochs(cfg.epochs, ckpt_path, saved["train"].get("epochs"))
        cfg = TrainConfig(**{**saved["train"], "epochs": epochs, "quiet": cfg.quiet, "out": str(run_dir)})
    prep = prepare_data(cfg, run_dir if run.resume else None)
    model_cfg = model_config(cfg, prep.src_vocab, prep.tgt_vocab)
    model = build_model(model_cfg, cfg.seed, cfg.dtype)
    tf_gen = grad.Generator(cfg.seed + 1)
    optimizer = make_optimizer(cfg, model)
    if not run.resume and run.writes:   # the run's description first (a kill after it: a clean restart)
        write_json(run_dir / "config.json", {"format_version": FORMAT_VERSION, "kind": "seq2seq",
                                             "model": model_cfg, "data": prep.data_config(),
                                             "train": asdict(cfg)})
        prep.save(run_dir)     # vocabularies, training-source digests
    src_ids, tgt_ids = prep.ids["train"]
    lengths = [max(len(s), len(t)) for s, t in zip(src_ids, tgt_ids)]

    from .data.batching import collate, make_batches

    def epoch_batches(epoch):
        """The epoch's batches (lists of example positions, collated by ``step``): shuffled
        from a generator seeded by (seed, epoch), so a resumed run rebuilds exactly the order it
        was in, and every rank of a data-parallel run builds the same global batches."""
        rng = np.random.default_rng([cfg.seed, epoch])
        return make_batches(lengths, cfg.batch_size, True, rng)

    def step(idx, **kwargs):
        """``train_step`` on the batch of the example positions ``idx`` (with ``comm``: this
        rank's shard of the global batch)."""
        return train_step(model, optimizer, collate(src_ids, tgt_ids, idx), cfg,
                          tf_generator=tf_gen, **kwargs)

    def describe(record, improved):
        return (f"epoch {record['epoch']:>2}  train ppl {format_ppl(record['train_ppl'])}  valid ppl "
                f"{format_ppl(record['valid_ppl'])}  token acc {100 * record['valid_token_acc']:5.1f}%  "
                f"exact {100 * record['valid_exact_match']:5.1f}%  BLEU {record['valid_bleu']:5.1f}"
                f"  ({record['time']:.0f}s)" + ("  *" if improved else ""))

    trainer = Trainer(model, optimizer, run=run, batches=epoch_batches, step=step,
                      validate=lambda: evaluate(model, prep, "valid", decode_limit=cfg.valid_decode_limit,
                                                comm=comm),
                      describe=describe, epochs=cfg.epochs, max_grad_norm=cfg.max_grad_norm,
                      nan_policy=cfg.nan_policy, skip_option=True,
                      select=cfg.select_metric, higher_is_better=cfg.select_metric != "loss",
                      patience=cfg.patience, **_lr_schedule(cfg),
                      generators={"dropout_generator": _dropout_generator(model),
                                  "tf_generator": tf_gen},
                      quiet=cfg.quiet, log=log, run_info=run_info, comm=comm,
                      check_every=cfg.check_every, seed=cfg.seed)
    if ckpt_path is not None:  # checked against this model and optimizer; a mismatch names it
        ts = trainer.restore(ckpt_path)
        log(f"resuming {run_dir} at epoch {ts['epoch']}, iteration {ts['iteration']}")
    log(f"validation after each epoch decodes greedy; "
        f"{bleu_label(prep.tgt_tokenizer.name)}; * marks a new best valid "
        f"{'BLEU' if cfg.select_metric == 'bleu' else cfg.select_metric.replace('_', ' ')}")
    trainer.fit()

    # ------------------------------------------------------------------ final test
    if run.writes:             # rank 0 reads the best weights; the other ranks receive them
        best = load_checkpoint(run_dir / "best.npz") if (run_dir / "best.npz").exists() else None
        if best is not None:
            model.load_state_dict(best["model"])
    if comm is not None:
        comm.broadcast_parameters(model.parameters())
    split = "test" if "test" in prep.ids else "valid"
    result = {"run_dir": str(run_dir), "split": split, "time": time.time() - start_time}
    with trainer.guard.run():
        for name in [s for s in prep.ids if s.startswith("test")] or [split]:
            result[name] = evaluate(model, prep, name, decode_limit=None, comm=comm)
    return result
