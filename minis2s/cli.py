"""The ``minis2s`` command: train, translate, evaluate, plot, tasks, data, export (and ``lm``,
``exercise``, ``figures``, ``graph``).

Every impossible setting is refused before any work starts, with one line on stderr and exit
code 2; an interrupted training run exits with 130 (Ctrl-C, SIGINT) or 143 (SIGTERM) after saving
a resumable checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import fields

from . import __version__
from .cli_common import (UsageError, _Parser, _nonneg_float, _nonneg_int, _positive_float,  # noqa: F401
                         _positive_int, _read_lines, _require_training_memory,
                         _saved_hidden_size, _unit_float, _unit_open_float, _warnings_to_stderr,
                         add_check_every_option, add_max_memory, add_reference_and_dtype,
                         add_threads_option, check_out_dir, print_data_parallel, running_mode,
                         saved_train_value, set_threads, tune_allocator)
from .metrics import format_ppl


def _task_names():
    from .data.tasks import TASKS
    return sorted(TASKS)


# ------------------------------------------------------------------------ parser
def build_parser(train_defaults: dict | None = None) -> argparse.ArgumentParser:
    """The ``minis2s`` parser; ``train_defaults`` (from ``--config FILE``) replace the defaults
    of ``train``'s options, so that flags given on the command line still override them."""
    from .train import ARCH_DEFAULTS, TrainConfig
    d = TrainConfig()
    p = _Parser(prog="minis2s", description="LSTM seq2seq with attention, from scratch.")
    p.add_argument("--version", action="version", version=f"minis2s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a seq2seq model (default: the built-in 'dates' task)",
                       description="Train a seq2seq model. With no data argument it trains on the "
                                   "built-in 'dates' task.",
                       epilog="Each epoch prints one line of validation metrics (greedy decoding); "
                              "'*' at the end of a line marks a new best validation score "
                              "(--select-metric): that epoch's weights are saved as the model "
                              "(best.npz) and used for the final test.")
    data = t.add_argument_group("data")
    data.add_argument("--task", choices=_task_names(), help="built-in task (default: dates)")
    data.add_argument("--train", metavar="FILE", help="training TSV (source<TAB>target per line; default: none, the built-in task)")
    data.add_argument("--valid", metavar="FILE", help="validation TSV (needed with --train; default: none)")
    data.add_argument("--test", metavar="FILE", help="test TSV (default: none, the validation split is reported)")
    for split in ("train", "valid", "test"):
        data.add_argument(f"--{split}-src", metavar="FILE", help=f"{split} source file (one sentence per line; default: none)")
        data.add_argument(f"--{split}-tgt", metavar="FILE", help=f"{split} target file, line-aligned (default: none)")
    data.add_argument("--tokenizer", choices=["char", "space", "bpe"], help="default: the task's, or char")
    data.add_argument("--bpe-merges", type=_positive_int, default=d.bpe_merges, metavar="N")
    data.add_argument("--max-length", type=_positive_int, default=d.max_length, metavar="N",
                      help=f"drop training pairs longer than N tokens (default {d.max_length})")
    data.add_argument("--skip-bad-lines", action="store_true", help="skip malformed lines with a counted warning")
    data.add_argument("--n-train", type=_positive_int, metavar="N", help="built-in task: training pairs (default: the task's)")
    data.add_argument("--n-valid", type=_positive_int, metavar="N", help="built-in task: validation pairs (default: the task's)")
    data.add_argument("--n-test", type=_positive_int, metavar="N", help="built-in task: test pairs (default: the task's)")
    model = t.add_argument_group("model")
    model.add_argument("--arch", choices=["lstm", "transformer"], default=d.arch,
                       help="LSTM encoder-decoder with Luong attention, or a Transformer")
    model.add_argument("--emb-size", type=_positive_int,
                       help="(default: 64; a Transformer: --hidden-size, the only value it takes)")
    model.add_argument("--hidden-size", type=_positive_int, default=d.hidden_size,
                       help="LSTM: even (bi-LSTM encoder); Transformer: d_model, divisible by --heads")
    model.add_argument("--layers", type=_positive_int, default=d.layers, help="LSTM layers")
    model.add_argument("--dropout", type=_unit_open_float, default=d.dropout)
    model.add_argument("--attention", choices=["general", "dot", "none"], default=d.attention,
                       help="LSTM only")
    model.add_argument("--no-input-feeding", dest="input_feeding", action="store_false",
                       help="LSTM only")
    tdef = ARCH_DEFAULTS["transformer"]
    model.add_argument("--heads", type=_positive_int, metavar="H",
                       help=f"Transformer: attention heads (default: {tdef['heads']})")
    model.add_argument("--encoder-layers", type=_positive_int, metavar="N",
                       help=f"Transformer: encoder layers (default: {tdef['encoder_layers']})")
    model.add_argument("--decoder-layers", type=_positive_int, metavar="N",
                       help=f"Transformer: decoder layers (default: {tdef['decoder_layers']})")
    model.add_argument("--ff-size", type=_positive_int, metavar="N",
                       help="Transformer: feed-forward width (default: 4 x --hidden-size)")
    model.add_argument("--positions", choices=["sinusoidal", "learned"],
                       help=f"Transformer: position encoding (default: {tdef['positions']})")
    model.add_argument("--share-embeddings", action="store_true",
                       help="Transformer: one embedding table for source and target (needs one "
                            "vocabulary for both)")
    model.add_argument("--norm-first", action="store_true",
                       help="Transformer: pre-norm layers, x + f(norm(x)) (default: post-norm, "
                            "norm(x + f(x)), as torch.nn.Transformer)")
    opt = t.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=_positive_int,
                     help=f"total epochs (default: {d.epochs}; a Transformer: {tdef['epochs']}; "
                          "with --resume, the run's own total)")
    opt.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    opt.add_argument("--optimizer", choices=["adam", "sgd"], default=d.optimizer)
    opt.add_argument("--lr", type=_positive_float,
                     help=f"learning rate (default: {ARCH_DEFAULTS['lstm']['lr']}; a Transformer: "
                          f"the peak of its schedule, {tdef['lr']})")
    opt.add_argument("--warmup-steps", type=_positive_int, metavar="N",
                     help="Transformer: the learning rate rises linearly for N steps, then decays "
                          f"as 1/sqrt(step) (default: {tdef['warmup_steps']})")
    opt.add_argument("--lr-decay-start", type=_positive_int, metavar="E",
                     help="halve the learning rate every epoch from epoch E on (default: never)")
    opt.add_argument("--patience", type=_positive_int, metavar="P", help="early stopping after P epochs without improvement (default: none, train every epoch)")
    opt.add_argument("--label-smoothing", type=_unit_open_float,
                     help=f"(default: {ARCH_DEFAULTS['lstm']['label_smoothing']}; a Transformer: "
                          f"{tdef['label_smoothing']})")
    opt.add_argument("--tf-ratio", type=_unit_float, default=d.tf_ratio,
                     help="teacher-forcing ratio (the starting one under --tf-schedule): 1.0 always "
                          "feeds the reference")
    opt.add_argument("--tf-schedule", choices=["constant", "linear", "exponential", "inverse-sigmoid"],
                     default=d.tf_schedule, help="scheduled sampling: decay the ratio by epoch")
    opt.add_argument("--tf-decay", type=float, metavar="D",
                     help="linear: subtracted per epoch (0.1); exponential: factor per epoch (0.8); "
                          "inverse-sigmoid: k >= 1 (5) (default: the schedule's value in brackets)")
    opt.add_argument("--tf-min", type=_unit_float, default=d.tf_min, help="floor of the decayed ratio")
    opt.add_argument("--max-grad-norm", type=_positive_float, default=d.max_grad_norm)
    opt.add_argument("--nan-policy", choices=["stop", "skip"], default=d.nan_policy)
    opt.add_argument("--select-metric", choices=["loss", "exact_match", "bleu"],
                     help="the valid score that picks the best epoch (default: "
                          f"{ARCH_DEFAULTS['lstm']['select_metric']}; a Transformer: "
                          f"{tdef['select_metric']})")
    run = t.add_argument_group("run")
    run.add_argument("--seed", type=_nonneg_int, default=d.seed)
    run.add_argument("--device", choices=["cpu", "cuda"], default=d.device)
    add_reference_and_dtype(run)
    run.add_argument("--out", metavar="DIR", help="run directory (default: runs/TASK, numbered if taken)")
    run.add_argument("--resume", metavar="DIR", help="continue the run in DIR (--epochs is the total; default: a new run)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--config", metavar="FILE",
                     help="defaults for these options from a run's config.json or a YAML file "
                          "(needs PyYAML) of option names and values; flags override it "
                          "(default: none)")
    add_threads_option(run)
    add_check_every_option(run)
    add_max_memory(run)
    t.set_defaults(func=cmd_train)
    if train_defaults:
        t.set_defaults(**train_defaults)

    tr = sub.add_parser("translate", help="translate sentences with a trained model")
    tr.add_argument("--model", required=True, metavar="DIR")
    tr.add_argument("--input", metavar="FILE", help="one sentence per line (default: standard input)")
    tr.add_argument("--output", metavar="FILE", help="default: standard output")
    tr.add_argument("--beam-size", type=_positive_int, default=5)
    tr.add_argument("--n-best", type=_positive_int, default=1)
    tr.add_argument("--length-penalty", type=_nonneg_float, default=0.0,
                    help="GNMT alpha: larger values favour longer outputs (0: none)")
    tr.add_argument("--max-output-length", type=_positive_int, metavar="L",
                    help="tokens per translation at most (default: 2 x the model's --max-length + 10)")
    tr.add_argument("--plot-attention", metavar="FILE.png", help="draw the first sentence's attention (default: no plot)")
    tr.add_argument("--layer", type=_positive_int, metavar="L",
                    help="Transformer: plot the cross-attention of decoder layer L (default: the last)")
    tr.add_argument("--head", type=_positive_int, metavar="H",
                    help="Transformer: plot head H only (default: the average over the heads)")
    tr.add_argument("--all-heads", action="store_true",
                    help="Transformer: plot every head of every layer as a grid")
    tr.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    add_threads_option(tr)
    add_max_memory(tr)
    tr.set_defaults(func=cmd_translate)

    ev = sub.add_parser("evaluate", help="score a trained model on a TSV file or two line-aligned files")
    ev.add_argument("--model", required=True, metavar="DIR")
    ev.add_argument("--data", metavar="FILE", help="TSV: source<TAB>reference per line "
                                                   "(default: none, give this or --src and --ref)")
    ev.add_argument("--src", metavar="FILE", help="source sentences, one per line (default: none)")
    ev.add_argument("--ref", metavar="FILE", help="references, line-aligned with --src (default: none)")
    ev.add_argument("--beam-size", type=_positive_int, default=5,
                    help="as 'translate' (1: greedy, as validation during training)")
    ev.add_argument("--length-penalty", type=_nonneg_float, default=0.0,
                    help="GNMT alpha, as 'translate'")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    add_threads_option(ev)
    add_max_memory(ev)
    ev.set_defaults(func=cmd_evaluate)

    pl = sub.add_parser("plot", help="plot a run's loss and perplexity curves")
    pl.add_argument("--run", required=True, metavar="DIR")
    pl.add_argument("--out", required=True, metavar="FILE.png")
    pl.set_defaults(func=cmd_plot)

    ta = sub.add_parser("tasks", help="list the built-in tasks")
    ta.set_defaults(func=cmd_tasks)

    da = sub.add_parser("data", help="write a built-in task's TSV splits")
    da.add_argument("--task", required=True, choices=_task_names())
    da.add_argument("--out", required=True, metavar="DIR")
    da.add_argument("--seed", type=_nonneg_int, default=0)
    for split in ("train", "valid", "test"):
        da.add_argument(f"--n-{split}", type=_positive_int, metavar="N",
                        help=f"{split} pairs (default: the task's; as for 'minis2s train')")
    da.set_defaults(func=cmd_data)

    ex = sub.add_parser("export", help="write a trained model's weights as a safetensors file")
    ex.add_argument("--model", required=True, metavar="DIR")
    ex.add_argument("--out", required=True, metavar="FILE.safetensors")
    ex.add_argument("--checkpoint", choices=["best", "last"], default="best",
                    help="the best validation epoch's weights or the last epoch's")
    ex.set_defaults(func=cmd_export)

    try:
        from .lm.cli import add_lm_parser
    except ImportError:
        add_lm_parser = None
    if add_lm_parser is not None:
        add_lm_parser(sub)
    from .exercises.runner import add_exercise_parser      # minis2s exercise list | show | check
    add_exercise_parser(sub)
    from .figures import add_figures_parser                # minis2s figures (docs/images)
    add_figures_parser(sub)
    from .graph_cmd import add_graph_parser                # minis2s graph (grad.viz)
    add_graph_parser(sub)
    return p


# ------------------------------------------------------------------------ commands
def _use_device(device: str) -> None:
    if device == "cuda":
        from grad import backend
        backend.use("cupy")


def _train_config(args):
    from .tf_schedule import check_tf_schedule
    from .train import TrainConfig
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    has_files = bool(args.train or args.train_src)
    if has_files and args.task:
        raise UsageError("give either --task or data files (--train/--train-src), not both")
    for flag in ("valid", "test"):
        if getattr(args, flag) and not args.train:
            raise UsageError(f"--{flag} FILE needs --train FILE (without it the built-in task is used)")
        for side in ("src", "tgt"):
            if getattr(args, f"{flag}_{side}") and not args.train_src:
                raise UsageError(f"--{flag}-{side} needs --train-src and --train-tgt")
    if bool(args.test_src) != bool(args.test_tgt):
        raise UsageError("--test-src and --test-tgt go together")
    if has_files:
        given = [f"--{n.replace('_', '-')}" for n in ("n_train", "n_valid", "n_test") if getattr(args, n)]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to a built-in task, not to data files")
    if args.train and args.train_src:
        raise UsageError("give either TSV files (--train) or line-aligned files (--train-src), not both")
    if args.train_src and not args.train_tgt:
        raise UsageError("--train-src needs --train-tgt")
    if args.train and not args.valid:
        raise UsageError("--train needs --valid FILE")
    if args.train_src and not (args.valid_src and args.valid_tgt):
        raise UsageError("--train-src needs --valid-src and --valid-tgt")
    if args.hidden_size % 2 and args.arch == "lstm":
        raise UsageError(f"--hidden-size must be even (the encoder has two directions), got {args.hidden_size}")
    if has_files:
        values["task"] = None
    check_tf_schedule(args.tf_schedule, args.tf_ratio, args.tf_decay, args.tf_min)
    try:
        cfg = TrainConfig(**values)        # refuses options of the other architecture
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.resume and args.epochs is None:
        cfg.epochs = None                  # the run's own total (minis2s.train.fit), not a default
    return cfg


# A resumed run keeps the data, model and optimisation settings it was started with; only these
# may be given again.
_RESUME_OPTIONS = {"resume", "epochs", "quiet", "device", "threads", "max_memory", "reference",
                   "command", "func", "config", "check_every"}


def _check_resume_options(args) -> None:
    """Refuse options that ``--resume`` would otherwise silently ignore."""
    defaults = vars(build_parser().parse_args(["train"]))
    given = [name for name, value in vars(args).items()
             if name not in _RESUME_OPTIONS and value != defaults.get(name)]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") if n != "input_feeding" else "--no-input-feeding"
                          for n in given)
        raise UsageError(f"--resume continues the run with the settings it was started with; "
                         f"only --epochs, --quiet, --device, --threads, --max-memory and --reference "
                         f"can be given, "
                         f"not {flags}")


def cmd_train(args) -> int:
    from .train import fit
    tune_allocator()
    if args.resume and not os.path.isdir(args.resume):
        raise UsageError(f"--resume {args.resume}: no such run directory")
    if args.resume:
        _check_resume_options(args)
    check_out_dir(args.out)
    cfg = _train_config(args)
    if not args.resume and cfg.arch == "transformer":
        from .models.transformer import transformer_seq2seq_params
        n = transformer_seq2seq_params(5, 5, cfg.hidden_size, cfg.encoder_layers,
                                       cfg.decoder_layers, cfg.ff_size)
        _require_training_memory(f"a Transformer with --hidden-size {cfg.hidden_size} "
                                 f"--encoder-layers {cfg.encoder_layers} --decoder-layers "
                                 f"{cfg.decoder_layers} --ff-size {cfg.ff_size}", n, cfg.optimizer)
    elif not args.resume:
        from .memory import seq2seq_params
        n = seq2seq_params(5, 5, cfg.emb_size, cfg.hidden_size, cfg.layers,
                           None if cfg.attention == "none" else cfg.attention, cfg.input_feeding)
        _require_training_memory(f"a model with --emb-size {cfg.emb_size} --hidden-size "
                                 f"{cfg.hidden_size} --layers {cfg.layers}", n, cfg.optimizer)
    _use_device(cfg.device)
    hidden = _saved_hidden_size(args.resume) if args.resume else cfg.hidden_size
    threads = set_threads(args, hidden)
    from .distributed import world
    comm = world()
    run_info = {"blas_threads": threads["blas_threads"], "threads_reason": threads["threads_reason"]}
    if comm is None:
        print(threads["header"], flush=True)
    else:
        print_data_parallel(saved_train_value(args.resume, "batch_size", cfg.batch_size)
                            if args.resume else cfg.batch_size, threads)
        run_info["ranks"] = comm.size
    if args.reference:
        run_info["reference_mode"] = True   # how this process ran (log.jsonl), not a setting
        print("reference mode: every fused fast path runs its composed reference", flush=True)
    with _warnings_to_stderr(), running_mode(args.reference):
        result = fit(cfg, resume=args.resume, log=lambda m: print(m, flush=True), run_info=run_info,
                     comm=comm)
    labelled = False
    for name, m in result.items():
        if isinstance(m, dict):
            if not labelled:
                print(m["bleu_label"])
                labelled = True
            print(f"{name}: exact match {100 * m['exact_match']:.1f}%  token accuracy "
                  f"{100 * m['token_acc']:.1f}%  BLEU {m['bleu']:.1f}  perplexity {format_ppl(m['ppl'], 0)}  "
                  f"({m['decoded']} sentences, {m['decoding']})")
    print(f"model saved in {result['run_dir']}  ({result['time']:.0f}s)")
    return 0


def check_output_file(path, flag: str = "--output") -> None:
    """An output file must be writable: checked before any work, not after it."""
    if not path:
        return
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory, expected a file name")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} {path}: directory {parent} does not exist")
    target = path if os.path.exists(path) else parent
    if not os.access(target, os.W_OK):
        raise UsageError(f"{flag} {path}: not writable (permission denied on {target})")


@contextlib.contextmanager
def output_stream(path):
    """Standard output, or the file ``path``. A disk error while writing (a full disk) removes
    the partial file and is raised with ``filename`` set to ``path``."""
    if not path:
        try:
            yield sys.stdout
            sys.stdout.flush()
        except OSError as exc:
            exc.filename = exc.filename or "<standard output>"
            raise
        return
    f = open(path, "w", encoding="utf-8")
    try:
        yield f
        f.close()
    except OSError as exc:
        try:
            f.close()
        except OSError:
            pass
        exc.filename = exc.filename or str(path)
        exc.minis2s_note = None
        if os.path.isfile(path):              # a regular file (never /dev/full and the like)
            os.unlink(path)
            exc.minis2s_note = "the partial output was removed"
        raise
    except BaseException:
        f.close()
        raise


def cmd_translate(args) -> int:
    """Translations are written as they are produced, in input order, a batch at a time (a line
    at a time from a terminal), each flushed: Ctrl-C keeps every finished line."""
    from . import load
    if args.n_best > args.beam_size:
        raise UsageError(f"--n-best ({args.n_best}) cannot be larger than --beam-size ({args.beam_size})")
    check_output_file(args.output)
    check_output_file(args.plot_attention, "--plot-attention")
    _use_device(args.device)
    model = load(args.model)
    _check_attention_view(args, model.model)
    set_threads(args, _saved_hidden_size(args.model))
    interactive = not args.input and sys.stdin.isatty()
    lines = _read_lines(args.input, lazy=True)
    first = None
    with output_stream(args.output) as out, _warnings_to_stderr():
        for r in model.translate_stream(lines, beam_size=args.beam_size, n_best=args.n_best,
                                        length_penalty=args.length_penalty,
                                        max_output_length=args.max_output_length,
                                        batch_size=1 if interactive else 64):
            first = r if first is None else first
            if args.n_best == 1:
                print(r.text, file=out)
            else:
                for rank, option in enumerate(r, 1):
                    print(f"{rank}\t{option.score:.4f}\t{option.text}", file=out)
                print(file=out)
            out.flush()
    if args.plot_attention and first is not None:
        from .plot import PlotError, plot_attention, plot_attention_grid
        first = first if args.n_best == 1 else first[0]
        rows, cols = first.tokens + ["</s>"], first.source_tokens + ["</s>"]
        title = model.src_tokenizer.detokenize(first.source_tokens)
        try:
            weights = _attention_view(args, model, first)
            if args.all_heads:
                plot_attention_grid(cols, rows, weights, args.plot_attention, title=title)
            else:
                plot_attention(cols, rows, weights, args.plot_attention, title=title)
        except PlotError as exc:         # the translations are written: warn, do not fail
            print(f"minis2s: warning: no attention plot: {exc}", file=sys.stderr)
        else:
            print(f"attention plot written to {args.plot_attention}", file=sys.stderr)
    return 0


def _check_attention_view(args, model) -> None:
    """``--layer``, ``--head`` and ``--all-heads`` need ``--plot-attention`` and a Transformer,
    and must name a layer and head it has."""
    given = [f for f, v in (("--layer", args.layer), ("--head", args.head),
                            ("--all-heads", args.all_heads)) if v]
    if not given:
        return
    if not args.plot_attention:
        raise UsageError(f"{', '.join(given)} only choose what --plot-attention draws; give it")
    if getattr(model, "arch", "lstm") != "transformer":
        raise UsageError(f"{', '.join(given)}: {args.model} is an LSTM model, whose attention has "
                         "one layer and one head; only a Transformer's can be chosen")
    n_layers, n_heads = len(model.decoder.layers), model.nhead
    if args.all_heads and (args.layer or args.head):
        raise UsageError("--all-heads draws every layer and head; leave out --layer and --head")
    if args.layer and args.layer > n_layers:
        raise UsageError(f"--layer {args.layer}: the model has {n_layers} decoder "
                         f"layer{'s' if n_layers > 1 else ''} (1 to {n_layers})")
    if args.head and args.head > n_heads:
        raise UsageError(f"--head {args.head}: the model has {n_heads} heads (1 to {n_heads})")


def _attention_view(args, translator, result):
    """The attention to draw for ``result``: the translation's own (an LSTM; a Transformer's
    last layer averaged over heads), or for a Transformer the chosen layer / head, or every
    layer and head ``(L, h, T, S)`` with ``--all-heads``, recomputed from its tokens."""
    model = translator.model
    if getattr(model, "arch", "lstm") != "transformer" or not (args.layer or args.head
                                                               or args.all_heads):
        return result.attention
    import numpy as np
    from .data.vocab import BOS, EOS
    src = np.array([translator.src_vocab.encode(result.source_tokens) + [EOS]])
    tgt_in = np.array([[BOS] + translator.tgt_vocab.encode(result.tokens)])
    weights = model.cross_attention(src, None, tgt_in)[0]                 # (L, h, T, S)
    if args.all_heads:
        return weights
    layer = weights[(args.layer or len(weights)) - 1]                    # (h, T, S)
    return layer[args.head - 1] if args.head else layer.mean(axis=0)


def cmd_evaluate(args) -> int:
    from . import load
    from .data.parallel import read_parallel, read_tsv
    from .runs import Prepared, _encode, seen_in_training
    from .train import evaluate
    if args.data and (args.src or args.ref):
        raise UsageError("give either --data FILE.tsv or --src and --ref, not both")
    if not args.data and not (args.src and args.ref):
        raise UsageError("give --data FILE.tsv, or --src FILE and --ref FILE")
    _use_device(args.device)
    model = load(args.model)
    set_threads(args, _saved_hidden_size(args.model))
    pairs = (read_tsv(args.data) if args.data else read_parallel(args.src, args.ref)).pairs
    where = args.data or args.src
    seen = seen_in_training(args.model, [s for s, _ in pairs])
    if seen:
        print(f"minis2s: warning: {seen} of {len(pairs)} sources in {where} are in the training "
              f"data of {args.model}: these metrics are not those of unseen data", file=sys.stderr)
    toks = [(model.src_tokenizer.tokenize(s)[:model.max_length], model.tgt_tokenizer.tokenize(t))
            for s, t in pairs]
    prep = Prepared(model.src_tokenizer, model.tgt_tokenizer, model.src_vocab, model.tgt_vocab,
                    ids={"data": _encode(toks, model.src_vocab, model.tgt_vocab)})
    metrics = evaluate(model.model, prep, "data", beam_size=args.beam_size,
                       length_penalty=args.length_penalty)
    metrics = {"exact_match": metrics["exact_match"], "token_acc": metrics["token_acc"],
               "bleu": metrics["bleu"], "cross_entropy": metrics["loss"], "ppl": metrics["ppl"],
               "sentences": metrics["decoded"], "decoding": metrics["decoding"],
               "bleu_label": metrics["bleu_label"]}
    if args.json:
        print(json.dumps(metrics))
    else:
        print(metrics["bleu_label"])
        print(f"exact match {100 * metrics['exact_match']:.2f}%  token accuracy "
              f"{100 * metrics['token_acc']:.2f}%  BLEU {metrics['bleu']:.2f}  cross-entropy "
              f"{metrics['cross_entropy']:.4f}  perplexity {format_ppl(metrics['ppl'], 0)}  "
              f"({metrics['sentences']} sentences, {metrics['decoding']})")
    return 0


def cmd_plot(args) -> int:
    from .plot import plot_run
    plot_run(args.run, args.out)
    print(f"wrote {args.out}")
    return 0


def _symbols(texts, tokenizer: str, most: int = 12) -> str:
    """``char, 11 symbols: -0123456789`` or ``space, 26 words: a b c ...``: the distinct tokens
    of ``texts`` (a space shown as ``␣``)."""
    if tokenizer == "char":
        tokens = sorted({c for t in texts for c in t})
        shown = "".join("␣" if c == " " else c for c in tokens)
        return f"char, {len(tokens)} symbols: {shown}" + ("  (␣: space)" if " " in tokens else "")
    tokens = sorted({w for t in texts for w in t.split()})
    shown = " ".join(tokens[:most]) + (" ..." if len(tokens) > most else "")
    return f"{tokenizer}, {len(tokens)} words: {shown}"


def cmd_export(args) -> int:
    from math import prod
    from .export import export_safetensors
    shapes = export_safetensors(args.model, args.out, args.checkpoint)
    print(f"wrote {len(shapes)} tensors ({sum(prod(s) for s in shapes.values()):,} "
          f"parameters) and the model's config to {args.out}")
    return 0


def cmd_tasks(args) -> int:
    from .data.tasks import TASKS, make_task
    print("the built-in tasks; symbols and words as found in the default splits (seed 0)")
    for name in sorted(TASKS):
        spec = TASKS[name]
        splits = make_task(name)
        pairs = [pair for split in splits.values() for pair in split]
        print(f"{name:<12} {spec.description}")
        print(f"{'':<12} splits: " + ", ".join(f"{k} {v}" for k, v in spec.sizes.items()))
        print(f"{'':<12} source: {_symbols([s for s, _ in pairs], spec.src_tokenizer)}")
        print(f"{'':<12} target: {_symbols([t for _, t in pairs], spec.tgt_tokenizer)}")
    return 0


def cmd_data(args) -> int:
    from .data.tasks import write_task
    check_out_dir(args.out)
    paths = write_task(args.task, args.out, seed=args.seed, n_train=args.n_train,
                       n_valid=args.n_valid, n_test=args.n_test)     # {split: path}
    for path in paths.values():
        print(path)
    return 0


# ------------------------------------------------------------------------ entry point
def _expected_errors():
    from grad.backend import BackendError
    from .export import ExportError
    from .checkpoint import CheckpointError
    from .data.parallel import DataError
    from .runs import RunInUseError
    return (UsageError, ExportError, DataError, CheckpointError, BackendError, RunInUseError,
            FileNotFoundError, ValueError)


# Keys of a run's config.json "train" section that describe that run, not a new one.
_RUN_ONLY_KEYS = {"out", "quiet"}


def _read_config(path) -> dict:
    """The option values in ``--config FILE``: a run's ``config.json`` (its ``train`` section),
    a JSON object or a YAML mapping of option names (``hidden_size`` or ``hidden-size``) to values."""
    if str(path).lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UsageError(f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); "
                             "a JSON file needs nothing") from None
        reader, errors = yaml.safe_load, (yaml.YAMLError,)
    else:
        reader, errors = json.loads, (ValueError,)
    try:
        with open(path, encoding="utf-8") as f:
            data = reader(f.read())
    except FileNotFoundError:
        raise UsageError(f"--config {path}: file not found") from None
    except errors as exc:
        raise UsageError(f"--config {path}: not readable ({' '.join(str(exc).split())})") from None
    if isinstance(data, dict) and isinstance(data.get("train"), dict) and "model" in data:
        data = {k: v for k, v in data["train"].items() if k not in _RUN_ONLY_KEYS}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _config_defaults(path) -> dict:
    """``--config FILE`` checked against ``train``'s options: unknown keys are refused, naming
    the key; values are converted and checked as the command line's would be."""
    from .train import TrainConfig
    values = _read_config(path)
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    actions = {a.dest: a for a in train._actions if a.dest not in ("help", "config", "resume")}
    extra_fields = {f.name for f in fields(TrainConfig)} - set(actions) - _RUN_ONLY_KEYS
    defaults = {}
    for key, value in values.items():
        if key not in actions and key not in extra_fields:
            raise UsageError(f"--config {path}: unknown key {key!r} (not an option of 'minis2s train')")
        action = actions.get(key)
        if action is not None and value is not None:
            flag = action.option_strings[0]
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                if not isinstance(value, bool):
                    raise UsageError(f"--config {path}: {key} must be true or false, got {value!r}")
            elif action.type is not None:
                try:
                    value = action.type(str(value))
                except (argparse.ArgumentTypeError, ValueError) as exc:
                    raise UsageError(f"--config {path}: {key} ({flag}): {exc}") from None
            if action.choices is not None and value not in action.choices:
                raise UsageError(f"--config {path}: {key} ({flag}) must be one of "
                                 f"{', '.join(map(str, action.choices))}, got {value!r}")
        defaults[key] = value
    return defaults


def _apply_config(argv, args):
    """Re-read the command line with ``--config``'s values as the defaults of ``train``."""
    if args.resume:
        raise UsageError("--resume continues with the run's own config; --config cannot be given with it")
    return build_parser(_config_defaults(args.config)).parse_args(argv)


# The commands that run data-parallel under mpiexec / srun (minis2s.distributed).
DATA_PARALLEL_COMMANDS = ("train", "lm train")


def main(argv=None) -> int:
    from . import distributed
    distributed.limit_blas_before_numpy()      # before NumPy loads its BLAS
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    launch = distributed.detect_launch()
    if distributed.is_parallel_launch(launch):
        return _main_data_parallel(args, argv, launch)
    return _main(args, argv)


def _main_data_parallel(args, argv, launch) -> int:
    """``main`` as one rank of an MPI job. Rank 0 alone prints; the others keep their standard
    error to show it only if they fail alone. A failure every rank reaches together (a
    divergence, a checksum difference, an interrupt the ranks agreed on) ends each rank with the
    exit code; any other failure ends the whole job with ``MPI_Abort`` and that exit code, so no
    rank is left waiting in a collective."""
    import io
    import time
    from . import distributed
    command = " ".join(x for x in (args.command, getattr(args, "lm_command", None)) if x)
    if command not in DATA_PARALLEL_COMMANDS:
        if launch.rank == 0:
            print(f"minis2s: error: 'minis2s {command}' does not run data-parallel; run it without "
                  f"{launch.launcher} (only {' and '.join(DATA_PARALLEL_COMMANDS)} do)", file=sys.stderr)
        return 2
    try:
        comm = distributed.init()
    except distributed.LaunchError as exc:
        if launch.rank == 0:
            print(f"minis2s: error: {exc}", file=sys.stderr)
        return 2
    if comm is None:                           # one rank: a plain run
        return _main(args, argv)
    held = None
    if not comm.is_root:
        sys.stdout = open(os.devnull, "w")
        held = sys.stderr = io.StringIO()
    failure = _FAILURES
    try:
        code = _main(args, argv)
    except BaseException:                      # a bug (a traceback), or MINIS2S_DEBUG's raise
        import traceback
        traceback.print_exc()
        code, failure[:] = 1, []
    if code == 0:
        return 0
    if failure and getattr(failure[-1], "collective", False):
        return code                            # every rank stops here, together
    sys.stdout.flush()
    if held is not None:                       # let rank 0 report a failure they all share
        time.sleep(5)
        os.write(2, "".join(f"[rank {comm.rank}] {line}\n"
                            for line in held.getvalue().splitlines()).encode("utf-8", "replace"))
    else:
        sys.stderr.flush()
    comm.abort(code)
    return code


# The exceptions that ended commands in this process (``_recorded``): a data-parallel rank asks
# whether the last one was collective (raised on every rank together).
_FAILURES: list = []


def _recorded(args) -> int:
    try:
        return args.func(args)
    except BaseException as exc:
        _FAILURES.append(exc)
        raise


def _main(args, argv) -> int:
    from .memory import set_limit
    set_limit(getattr(args, "max_memory", None))
    if os.environ.get("MINIS2S_DEBUG"):
        if getattr(args, "config", None):
            args = _apply_config(argv, args)
        return _recorded(args)
    from .distributed import RanksDiverged
    from .train import TrainingError
    try:
        if getattr(args, "config", None):
            args = _apply_config(argv, args)
        return _recorded(args)
    except KeyboardInterrupt as exc:      # Ctrl-C, or trainer_core.Interrupted (SIGINT/SIGTERM)
        print(f"minis2s: {getattr(exc, 'message', 'interrupted')}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except (TrainingError, RanksDiverged) as exc:
        print(f"minis2s: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of standard output went away (`minis2s lm generate ... | head`): stop
        # quietly, as other command-line tools do, with SIGPIPE's exit status.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            print(f"minis2s: error: {exc}", file=sys.stderr)
            return 2
        note = getattr(exc, "minis2s_note", "previously saved checkpoints are untouched")
        print(f"minis2s: error: {exc.strerror or exc} ({exc.filename or 'I/O'})"
              + (f"; {note}" if note else ""), file=sys.stderr)
        return 1
    except _expected_errors() as exc:
        print(f"minis2s: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
