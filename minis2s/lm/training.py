"""Training and loading language models: n-gram (counting), and LSTM or Transformer (the event
engine).

Both kinds are measured the same way: cross-entropy per predicted token in nats, EOS counted and
BOS never predicted, over a whole split; perplexity = exp(cross-entropy). Empty sentences are
kept (one predicted token, EOS), and the LSTM's training loss weighs every predicted token the
same, whatever the length of the batch it falls in, so both kinds fit by maximum likelihood.
The Transformer is trained as the LSTM is, except for its learning rate: the inverse-square-root
schedule with a warm-up (``minis2s.train.inverse_sqrt_lr``, the seq2seq Transformer's), ``lr``
being its peak.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import grad
from grad import optim
from grad.nn.utils import clip_grad_norm_

from ..checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, read_json, write_json
from ..data.vocab import PAD
from ..metrics import format_ppl, perplexity
from ..trainer_core import RunDirectory, Trainer, default_run_dir
from .lstm_lm import LSTMLanguageModel, pad_batch, perplexity_from_scores
from .transformer_lm import TransformerLanguageModel

NEURAL = {"lstm": LSTMLanguageModel, "transformer": TransformerLanguageModel}


# The Transformer's own defaults where the LSTM's differ (``lm train --model transformer``
# and ``lm compare`` use them unless --layers / --lr are given).
TRANSFORMER_DEFAULTS = {"layers": 2, "lr": 3e-3}


@dataclass
class LMConfig:
    corpus: str | None = None
    builtin: str | None = None
    model: str = "lstm"               # "lstm", "transformer" or "ngram"
    order: int = 3
    smoothing: str = "kneser-ney"
    k: float = 1.0
    tokenizer: str = "space"
    bpe_merges: int = 1000
    min_freq: int = 2
    emb_size: int = 64
    hidden_size: int = 128
    layers: int = 1
    dropout: float = 0.1
    tie_weights: bool = False
    heads: int = 4                    # Transformer: attention heads (hidden_size is d_model)
    ff_size: int | None = None        # Transformer: feed-forward width (None: 4 x hidden_size)
    positions: str = "sinusoidal"     # Transformer: "sinusoidal" or "learned"
    warmup_steps: int = 100           # Transformer: steps of linear warm-up to lr
    max_length: int = 5000            # longer sentences are dropped, with a warning
    epochs: int = 5
    batch_size: int = 32
    lr: float = 3e-3
    max_grad_norm: float = 5.0
    seed: int = 0
    dtype: str = "float32"            # of the weights and optimizer state (LSTM or Transformer)
    out: str | None = None
    quiet: bool = False
    check_every: int = 100            # data-parallel: steps between parameter checksums


# ------------------------------------------------------------------------------ data
def _split_lines(lines):
    """Deterministic 80/10/10 split of a text corpus by line: every 10th line (from the 9th)
    to valid, every 10th (from the 10th) to test."""
    train, valid, test = [], [], []
    for i, line in enumerate(lines):
        (valid if i % 10 == 8 else test if i % 10 == 9 else train).append(line)
    return train, valid, test


def load_corpus(cfg: LMConfig, tokenizer=None):
    """``(train, valid, test, tokenizer, info)``: sentences as token lists. ``tokenizer``: the
    run's own (a resumed run), instead of one made (or, for BPE, learned) from ``cfg``.

    Every sentence is kept, the empty one included: an empty sentence is a real event (``</s>``
    right after ``<s>``), which both models predict -- the n-gram as ``P(</s> | <s> ...)``, the
    LSTM as the one step ``[BOS] -> [EOS]`` -- and the Markov source emits it with probability
    ``e`` of its start state; dropping it would bias every test figure. Nothing here is
    unmodellable, so nothing is dropped after tokenizing. The one thing skipped is layout in a
    ``--corpus`` file: blank (whitespace-only) lines separate paragraphs there and are not read
    as sentences, and each line is stripped of surrounding whitespace.
    """
    from ..data.tokenizers import get_tokenizer
    info = {}
    if cfg.builtin:
        from .corpora import load_builtin
        corpus = load_builtin(cfg.builtin, seed=cfg.seed)
        texts = [[" ".join(s) for s in split] for split in (corpus.train, corpus.valid, corpus.test)]
        info = dict(corpus.info)
    elif cfg.corpus:
        from ..data.parallel import DataError
        path = Path(cfg.corpus)
        from ..data.parallel import read_text_lines
        lines = [l.strip() for l in read_text_lines(path)]
        lines = [l for l in lines if l]
        if len(lines) < 10:
            raise DataError(path, None, f"needs at least 10 non-blank lines, has {len(lines)}")
        texts = list(_split_lines(lines))
    else:
        raise ValueError("give --corpus FILE or --builtin NAME")
    if tokenizer is not None:
        tok = tokenizer
    elif cfg.tokenizer == "bpe":
        from ..data.bpe import BPETokenizer
        # a line of more words than --max-length has more tokens too: not worth learning from
        tok = BPETokenizer.train([t for t in texts[0] if len(t.split()) <= cfg.max_length],
                                 cfg.bpe_merges)
    else:
        tok = get_tokenizer(cfg.tokenizer)
    splits = [_within_max_length([tok.tokenize(t) for t in split], name, cfg.max_length)
              for name, split in zip(("train", "valid", "test"), texts)]
    return splits[0], splits[1], splits[2], tok, info


def _within_max_length(sentences, name: str, max_length: int):
    """Drop sentences longer than ``max_length`` tokens, as ``minis2s train`` drops pairs: a
    5 MB line would otherwise be one LSTM sequence of a million steps."""
    import warnings
    kept = [s for s in sentences if len(s) <= max_length]
    dropped = len(sentences) - len(kept)
    if sentences and not kept:
        raise ValueError(f"no {name} sentence is within --max-length {max_length} tokens "
                         f"(all {len(sentences)} are longer)")
    if dropped:
        warnings.warn(f"{name}: dropped {dropped} of {len(sentences)} sentences longer than "
                      f"--max-length {max_length} tokens", stacklevel=3)
    return kept


# ------------------------------------------------------------------------------ n-gram
def train_ngram(cfg: LMConfig, train, valid, test):
    from .ngram import NGramLM
    lm = NGramLM(cfg.order, smoothing=cfg.smoothing, k=cfg.k, min_freq=cfg.min_freq)
    lm.fit(train)
    return lm, {"valid_ppl": lm.perplexity(valid), "test_ppl": lm.perplexity(test)}


# ------------------------------------------------------------------------------ LSTM
def _encode(vocab, sentences):
    return [vocab.encode(s, add_bos=True, add_eos=True) for s in sentences]


def evaluate_lm(model, ids, batch_size: int = 64, comm=None) -> float:
    """Cross-entropy per predicted token (nats) over the whole split. With ``comm`` (a
    data-parallel run) each rank scores a contiguous share of the sentences and the sums are
    added up; every rank returns the figure of the whole split."""
    if comm is None:
        scores = model.score([s[1:-1] for s in ids], batch_size=batch_size)
        return math.log(perplexity_from_scores(scores))
    part = comm.shard(ids)
    scores = model.score([s[1:-1] for s in part], batch_size=batch_size) if part else []
    logprob, n = comm.sum_values([sum(s for s, _ in scores), sum(k for _, k in scores)])
    return -logprob / max(n, 1)


def _model_config(cfg: LMConfig, vocab) -> dict:
    """The keyword arguments of the model class ``cfg.model`` names (``config.json``'s "model")."""
    if cfg.model == "transformer":
        # learned positions cover the longest sentence training keeps, with <s>
        return dict(vocab_size=len(vocab), d_model=cfg.hidden_size, nhead=cfg.heads,
                    num_layers=cfg.layers, dim_feedforward=cfg.ff_size or 4 * cfg.hidden_size,
                    dropout=cfg.dropout, pad_idx=0, positions=cfg.positions,
                    max_len=cfg.max_length + 1, tie_weights=cfg.tie_weights)
    return dict(vocab_size=len(vocab), emb_size=cfg.emb_size, hidden_size=cfg.hidden_size,
                num_layers=cfg.layers, dropout=cfg.dropout, pad_idx=PAD, tie_weights=cfg.tie_weights)


def build_lstm_lm(model_cfg: dict, seed: int, dtype: str = "float32") -> LSTMLanguageModel:
    """The LSTM LM of ``model_cfg``, its weights drawn from ``seed`` and held in ``dtype``."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"--dtype must be float32 or float64, got {dtype!r}")
    model = LSTMLanguageModel(**model_cfg, generator=grad.Generator(seed))
    return model.to(dtype) if dtype != "float32" else model


def train_step(model, optimizer, batch, cfg: LMConfig, comm=None, *, scale: float, epoch: int = 1,
               guard=None) -> dict:
    """One optimisation step of the LSTM LM (or the Transformer LM: the same ``loss``), in the
    order it happens: zero the gradients -> forward (teacher forcing, ``x[:-1] -> x[1:]``) ->
    loss -> backward -> clip -> update.

    ``batch``: ``(ids (B, T) host int64, lengths (B,))`` from ``pad_batch`` (BOS ... EOS);
    ``scale``: the number the batch's *summed* loss is divided by (the mean predicted tokens per
    batch, so that every token weighs the same: see ``train_lstm``). ``comm``: gradients summed
    over processes before clipping, and ``loss`` is this batch's part of the per-token loss of
    all processes' batches (their tokens counted by ``comm.sum_count``). ``guard`` and the result: as ``minis2s.train.train_step``
    (``loss`` is per predicted token). ``epoch`` is accepted for the trainer's call, unused.
    """
    arr, lens = batch
    model.train()                                                      # dropout on
    params = list(model.parameters())
    optimizer.zero_grad()                                              # 1. zero the gradients
    total = model.loss(arr[:, :-1], arr[:, 1:], lens - 1, reduction="sum")  # 2. forward, 3. loss
    n_tokens = int((lens - 1).sum())
    loss, value = total / scale, total.item() / n_tokens               # value: nats per token
    if comm is not None:            # this shard's part of the global batch's nats per token
        value = total.item() / comm.sum_count(n_tokens)
    if guard is not None and (problem := guard.check_loss(value)):
        return {"loss": value, "n_tokens": n_tokens, "problem": problem, "can_skip": True}
    loss.backward()                                                    # 4. backward
    if comm is not None:
        comm.sum_gradients(params)
    grad_norm = clip_grad_norm_(params, cfg.max_grad_norm).item()      # 5. clip
    if guard is not None and (problem := guard.check_grad_norm(grad_norm)):
        optimizer.zero_grad()
        return {"loss": value, "n_tokens": n_tokens, "problem": problem, "can_skip": True}
    optimizer.step()                                                   # 6. update
    if guard is not None and (problem := guard.check_params(model.named_parameters())):
        return {"loss": value, "n_tokens": n_tokens, "problem": problem, "can_skip": False}
    return {"loss": value, "n_tokens": n_tokens, "grad_norm": grad_norm}


_lstm_model_config = _model_config


def train_lstm(cfg: LMConfig, train, valid, test, run: RunDirectory | None = None, log=print,
               vocab=None, resume_from=None, run_info: dict | None = None, comm=None):
    """Train the neural LM ``cfg.model`` names (``"lstm"`` or ``"transformer"``; the function's
    name is the older one): teacher-forced training on ``x[:-1] -> x[1:]`` with Adam and clipping
    (the Transformer's rate following ``minis2s.train.inverse_sqrt_lr`` with peak ``cfg.lr``),
    validated each epoch; the best epoch (valid cross-entropy) is kept. On the trainer core
    (``minis2s.trainer_core.Trainer``): with a ``run`` directory, checkpoints every epoch, a
    resumable checkpoint on SIGINT/SIGTERM, and ``resume_from`` (a checkpoint path) to continue
    from; without one (``lm compare``), the best weights are kept in memory. ``run_info`` (e.g.
    the BLAS thread count) is added to every log.jsonl line. Returns ``(model, vocab, figures)``."""
    from ..data.batching import make_batches
    from ..data.vocab import Vocab
    vocab = vocab if vocab is not None else Vocab.build(train, min_freq=cfg.min_freq)
    if cfg.model == "transformer":
        if cfg.dtype not in ("float32", "float64"):
            raise ValueError(f"--dtype must be float32 or float64, got {cfg.dtype!r}")
        model = TransformerLanguageModel(**_model_config(cfg, vocab),
                                         generator=grad.Generator(cfg.seed), dtype=cfg.dtype)
    else:
        model = build_lstm_lm(_model_config(cfg, vocab), cfg.seed, cfg.dtype)
    opt = optim.Adam(model.parameters(), lr=cfg.lr)
    lr_for_step = None
    if cfg.model == "transformer":
        from functools import partial
        from ..train import inverse_sqrt_lr          # one schedule for both Transformers
        lr_for_step = partial(inverse_sqrt_lr, cfg.lr, cfg.warmup_steps)      # step -> lr
    ids = {"train": _encode(vocab, train), "valid": _encode(vocab, valid), "test": _encode(vocab, test)}
    lengths = [len(s) for s in ids["train"]]

    # Batches are length-bucketed, so one batch can hold 32 empty sentences (32 predicted tokens)
    # and another 32 long ones (hundreds). A per-batch *mean* would weigh each token by one over
    # its batch's token count, over-weighting short sentences (on markov it taught P(empty)
    # ~0.41 for a true 0.087). Each batch's *summed* loss is divided instead by one constant,
    # the mean predicted tokens per batch, so every token counts the same (maximum likelihood)
    # and the step size stays that of a mean.
    n_batches = math.ceil(len(lengths) / cfg.batch_size)          # make_batches' count
    per_batch = max(sum(l - 1 for l in lengths) / max(n_batches, 1), 1.0)

    def batches(epoch):
        rng = np.random.default_rng([cfg.seed, epoch])
        return make_batches(lengths, cfg.batch_size, True, rng)     # example positions

    def step(idx, **kwargs):
        """``train_step`` on the padded batch of the sentences ``idx`` (with ``comm``: this
        rank's shard of the global batch)."""
        return train_step(model, opt, pad_batch([ids["train"][i] for i in idx]), cfg,
                          scale=per_batch, **kwargs)

    def validate():
        ce = evaluate_lm(model, ids["valid"], comm=comm)
        return {"loss": ce, "ppl": perplexity(ce)}

    def describe(record, improved):
        return (f"epoch {record['epoch']:>2}  valid perplexity {format_ppl(record['valid_ppl'], 9, 3)}"
                + ("  *" if improved else ""))

    trainer = Trainer(model, opt, run=run, batches=batches, validate=validate,
                      step=step, describe=describe, epochs=cfg.epochs,
                      lr_for_step=lr_for_step,
                      max_grad_norm=cfg.max_grad_norm,
                      generators={"dropout_generator": model.dropout_generator},
                      quiet=cfg.quiet, log=log, run_info=run_info, comm=comm,
                      check_every=cfg.check_every, seed=cfg.seed)
    if resume_from is not None:
        ts = trainer.restore(resume_from)
        log(f"resuming {run.path} at epoch {ts['epoch']}, iteration {ts['iteration']}")
    trainer.fit()
    if run is not None:
        if run.writes:         # rank 0 reads the best weights; the other ranks receive them
            model.load_state_dict(load_checkpoint(run.path / "best.npz")["model"])
    else:
        model.load_state_dict(trainer.best_state)
    if comm is not None:
        comm.broadcast_parameters(model.parameters())
    with trainer.guard.run():
        test_ce = evaluate_lm(model, ids["test"], comm=comm)
    return model, vocab, {"valid_ppl": perplexity(trainer.best), "test_ppl": perplexity(test_ce)}


# ------------------------------------------------------------------------------ run dirs
def fit_lm(cfg: LMConfig, log=print, resume=None, run_info: dict | None = None, comm=None) -> dict:
    """Train the model ``cfg`` names and save it in a run directory, or continue the LSTM run
    in ``resume`` (``cfg.epochs`` is then the total); returns the figures. Every kind takes the
    run lock and the run-directory checks of ``minis2s.trainer_core.RunDirectory``, and writes
    its description (``config.json``, and ``vocab.json`` for an LSTM) before any model file."""
    start = time.time()
    if comm is not None and (cfg.model != "lstm" and not resume
                             or resume and _neural_kind(resume) != "lm-lstm"):
        raise ValueError("only LSTM language models train data-parallel (an n-gram model is "
                         "counted in one pass; the Transformer LM has no data-parallel run yet): "
                         "run it without mpiexec")
    if comm is not None and not comm.is_root:
        path = comm.bcast(None)          # rank 0's directory, once rank 0 holds it
        run = RunDirectory(path, "lm-lstm", resume=bool(resume), follower=True)
    elif resume:
        run = RunDirectory(resume, _neural_kind(resume), resume=True)
    else:
        if cfg.model not in ("ngram", "lstm", "transformer"):
            raise ValueError(f"--model must be 'ngram', 'lstm' or 'transformer', got {cfg.model!r}")
        if not (cfg.corpus or cfg.builtin):
            raise ValueError("give --corpus FILE or --builtin NAME")
        out = (Path(cfg.out) if cfg.out else
               default_run_dir(f"runs/lm-{cfg.builtin or Path(cfg.corpus).stem}-{cfg.model}"))
        run = RunDirectory(out, f"lm-{cfg.model}", settings=asdict(cfg))
    with run:
        if comm is not None and comm.is_root:
            comm.bcast(str(run.path))
        figures = _fit_lm_locked(cfg, run, log, run_info, comm)
    figures.update(run_dir=str(run.path), time=time.time() - start)
    return figures


def _neural_kind(run_dir) -> str:
    """The kind a resumed LM run is checked against: the Transformer's when its config says so,
    else the LSTM's (whose checks then name whatever else the directory holds)."""
    try:
        kind = read_json(Path(run_dir) / "config.json").get("kind")
    except (CheckpointError, AttributeError):
        kind = None
    return "lm-transformer" if kind == "lm-transformer" else "lm-lstm"


def _fit_lm_locked(cfg: LMConfig, run: RunDirectory, log, run_info, comm=None) -> dict:
    from ..data.vocab import Vocab
    from ..runs import tokenizer_from_config
    out, tok, resume_from = run.path, None, None
    if run.resume:
        saved = read_json(out / "config.json")
        cfg = LMConfig(**{**saved["train"], "epochs": cfg.epochs, "quiet": cfg.quiet, "out": str(out)})
        tok = tokenizer_from_config(saved["tokenizer"])
        resume_from = run.resume_checkpoint()
    train, valid, test, tok, info = load_corpus(cfg, tokenizer=tok)
    config = {"format_version": FORMAT_VERSION, "kind": f"lm-{cfg.model}", "train": asdict(cfg),
              "tokenizer": tok.to_dict(), "corpus_info": info}
    if cfg.model == "ngram":
        write_json(out / "config.json", config)           # the description first
        lm, figures = train_ngram(cfg, train, valid, test)
        lm.save(out / "ngram.json")
    else:
        if run.resume:
            if not (out / "vocab.json").is_file():
                raise CheckpointError(f"{out / 'vocab.json'}: file not found")
            vocab = Vocab.load(out / "vocab.json")
        else:
            vocab = Vocab.build(train, min_freq=cfg.min_freq)
            config["model"] = _model_config(cfg, vocab)
            if run.writes:
                write_json(out / "config.json", config)   # first, before any other file
                write_json(out / "vocab.json", vocab.to_dict())
        _, _, figures = train_lstm(cfg, train, valid, test, run, log, vocab=vocab,
                                   resume_from=resume_from, run_info=run_info, comm=comm)
    figures["info"] = info
    return figures


class LoadedLM:
    """A saved language model with its tokenizer: ``score`` and ``generate`` on text."""

    def __init__(self, kind, model, tokenizer, vocab=None):
        self.kind, self.model, self.tokenizer, self.vocab = kind, model, tokenizer, vocab

    def score(self, texts):
        """``[(logprob, n_predicted_tokens)]`` per text (EOS counted)."""
        token_lists = [self.tokenizer.tokenize(t) for t in texts]
        if self.kind == "lm-ngram":
            return [(self.model.logprob(toks), len(toks) + 1) for toks in token_lists]
        return self.model.score([self.vocab.encode(t) for t in token_lists])

    def generate(self, n=1, max_len=50, temperature=1.0, top_k=None, greedy=False, prompt=None, seed=0):
        return list(self.iter_generate(n, max_len, temperature, top_k, greedy, prompt, seed))

    def iter_generate(self, n=1, max_len=50, temperature=1.0, top_k=None, greedy=False,
                      prompt=None, seed=0, batch: int = 64):
        """The ``n`` sentences of ``generate``, yielded as they are sampled, ``batch`` at a time
        (one generator draws them all), so any ``n`` takes the memory of one batch. Up to
        ``batch`` sentences the draws are those of one call to the model's ``generate``."""
        if self.kind == "lm-ngram":
            prompt_tokens = self.tokenizer.tokenize(prompt) if prompt else []
            for tokens in self.model.iter_generate(n, max_len, temperature, top_k, greedy,
                                                   prompt_tokens, seed):
                yield self.tokenizer.detokenize(tokens)
            return
        prompt_ids = self.vocab.encode(self.tokenizer.tokenize(prompt)) if prompt else None
        gen = grad.Generator(seed)
        for start in range(0, n, batch):
            outs = self.model.generate(min(batch, n - start), max_len, temperature, top_k, greedy,
                                       prompt_ids, gen)
            for o in outs:
                yield self.tokenizer.detokenize(self.vocab.decode(o))


def load_lm(run_dir) -> LoadedLM:
    """Load a run directory written by ``fit_lm``. A missing, truncated or inconsistent file
    (``config.json``, ``ngram.json``, ``vocab.json``, ``best.npz``) raises ``CheckpointError``
    naming it."""
    from ..data.vocab import Vocab
    from ..runs import tokenizer_from_config
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: language model directory not found")
    config_path = run_dir / "config.json"
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: format version {config.get('format_version')}, "
                              f"this minis2s reads version {FORMAT_VERSION}")
    kind = config.get("kind")
    if kind in (None, "seq2seq") and "model" in config and "data" in config:
        raise CheckpointError(f"{run_dir}: a translation run, not a language model; read it with "
                              f"'minis2s translate' or 'minis2s evaluate' --model {run_dir}")
    if kind not in ("lm-ngram", "lm-lstm", "lm-transformer"):
        raise CheckpointError(f"{config_path}: not a language model directory (kind {kind!r})")
    try:
        tok = tokenizer_from_config(config["tokenizer"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{config_path}: unusable tokenizer entry ({type(exc).__name__}: {exc})") from exc
    if kind == "lm-ngram":
        from .ngram import NGramLM
        return LoadedLM(kind, NGramLM.load(run_dir / "ngram.json"), tok)
    vocab_path = run_dir / "vocab.json"
    if not vocab_path.is_file():
        raise CheckpointError(f"{vocab_path}: file not found")
    try:
        vocab = Vocab.load(vocab_path)
    except ValueError as exc:                       # its message already names the file
        raise CheckpointError(str(exc)) from exc
    from ..validate import lstm_lm_model_config, transformer_lm_model_config
    check = transformer_lm_model_config if kind == "lm-transformer" else lstm_lm_model_config
    model_cfg = check(config.get("model"), config_path)
    if model_cfg["vocab_size"] != len(vocab):
        raise CheckpointError(f"{vocab_path}: {len(vocab)} tokens, but {config_path} says the model "
                              f"has {model_cfg['vocab_size']}")
    path = run_dir / "best.npz"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        model = NEURAL[kind[3:]](**model_cfg, generator=grad.Generator(0))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: unusable model entry ({exc})") from exc
    try:                            # names and shapes checked before any data is read
        weights = load_checkpoint(path, model=model)["model"]
        if {str(a.dtype) for a in weights.values()} == {"float64"}:
            model.to("float64")     # a --dtype float64 run scores and samples in float64
        model.load_state_dict(weights)
    except ValueError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: weights do not match the config: {exc}") from exc
    return LoadedLM(kind, model, tok, vocab)


def compare(builtin: str, lstm_cfg: dict | None = None, orders=(1, 2, 3, 4, 5), log=print,
            seed: int = 0, transformer_cfg: dict | None = None):
    """Test perplexities of n-gram LMs (orders, both smoothings), an LSTM LM and, unless
    ``transformer_cfg`` is False, a Transformer LM (``lstm_cfg`` updated by ``transformer_cfg``,
    which defaults to ``TRANSFORMER_DEFAULTS``) on one split."""
    cfg = LMConfig(builtin=builtin, seed=seed, **(lstm_cfg or {}))
    train, valid, test, _, info = load_corpus(cfg)
    rows = []
    for order in orders:
        for smoothing in ("add-k", "kneser-ney"):
            c = LMConfig(**{**asdict(cfg), "model": "ngram", "order": order, "smoothing": smoothing})
            t0 = time.time()
            _, figures = train_ngram(c, train, valid, test)
            rows.append((f"{order}-gram {smoothing}", figures["test_ppl"], time.time() - t0))
    t0 = time.time()
    _, _, figures = train_lstm(cfg, train, valid, test, None, log=lambda m: None if cfg.quiet else log(m))
    rows.append((f"LSTM ({cfg.layers}x{cfg.hidden_size})", figures["test_ppl"], time.time() - t0))
    if transformer_cfg is not False:
        tcfg = LMConfig(**{**asdict(cfg), "model": "transformer", **TRANSFORMER_DEFAULTS,
                           **(transformer_cfg or {})})
        t0 = time.time()
        _, _, figures = train_lstm(tcfg, train, valid, test, None,
                                   log=lambda m: None if cfg.quiet else log(m))
        rows.append((f"Transformer ({tcfg.layers}x{tcfg.hidden_size}, {tcfg.heads} heads)",
                     figures["test_ppl"], time.time() - t0))
    return rows, info
