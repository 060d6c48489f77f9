"""``minis2s lm``: train, score, generate and compare language models."""
from __future__ import annotations

import json
import math

from ..cli_common import (UsageError, _nonneg_int, _Parser, _positive_float, _positive_int,
                          _read_lines, _require_training_memory, _saved_hidden_size,
                          _unit_open_float, _warnings_to_stderr, add_check_every_option,
                          add_max_memory, add_reference_and_dtype, add_threads_option,
                          check_out_dir, print_data_parallel, running_mode, saved_train_value,
                          set_threads, tune_allocator)


def add_lm_parser(sub) -> None:
    from .training import LMConfig
    d = LMConfig()
    from .training import TRANSFORMER_DEFAULTS as TD
    lm = sub.add_parser("lm", help="language models: n-gram, LSTM and Transformer")
    lsub = lm.add_subparsers(dest="lm_command", metavar="LM_COMMAND")

    t = lsub.add_parser("train", help="train an n-gram, LSTM or Transformer language model")
    src = t.add_mutually_exclusive_group()             # one of them, unless --resume
    src.add_argument("--corpus", metavar="FILE",
                     help="UTF-8 text, one sentence per line, blank lines skipped (split 80/10/10; default: none, give this or --builtin)")
    src.add_argument("--builtin", choices=["pydoc", "markov", "brackets"], help="built-in corpus (default: none, give this or --corpus)")
    t.add_argument("--model", choices=["ngram", "lstm", "transformer"], default=d.model)
    t.add_argument("--order", type=_positive_int, default=d.order)
    t.add_argument("--smoothing", choices=["add-k", "kneser-ney"], default=d.smoothing)
    t.add_argument("--k", type=_positive_float, default=d.k, help="add-k constant (1 = Laplace)")
    t.add_argument("--tokenizer", choices=["space", "char", "bpe"], default=d.tokenizer)
    t.add_argument("--bpe-merges", type=_positive_int, default=d.bpe_merges)
    t.add_argument("--min-freq", type=_positive_int, default=d.min_freq,
                   help="rarer training tokens become <unk>")
    t.add_argument("--emb-size", type=_positive_int,
                   help=f"LSTM word-vector size (default {d.emb_size}; the Transformer's is --hidden-size)")
    t.add_argument("--hidden-size", type=_positive_int, default=d.hidden_size,
                   help="LSTM state size; d_model for the Transformer (a multiple of --heads)")
    t.add_argument("--layers", type=_positive_int,
                   help=f"default: {d.layers} (LSTM), {TD['layers']} (Transformer)")
    t.add_argument("--heads", type=_positive_int, help=f"Transformer attention heads (default {d.heads})")
    t.add_argument("--ff-size", type=_positive_int,
                   help="Transformer feed-forward width (default: 4 x --hidden-size)")
    t.add_argument("--positions", choices=["sinusoidal", "learned"],
                   help=f"Transformer position encoding (default {d.positions})")
    t.add_argument("--warmup-steps", type=_positive_int,
                   help="Transformer: steps of linear warm-up to --lr, then lr falls as "
                        f"1/sqrt(step) (default {d.warmup_steps})")
    t.add_argument("--dropout", type=_unit_open_float, default=d.dropout)
    t.add_argument("--tie-weights", action="store_true",
                   help="the output layer uses the embedding matrix (LSTM: needs --emb-size = "
                        "--hidden-size)")
    t.add_argument("--max-length", type=_positive_int, default=d.max_length, metavar="N",
                   help=f"drop sentences longer than N tokens, with a warning (default {d.max_length})")
    t.add_argument("--epochs", type=_positive_int, default=d.epochs)
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    t.add_argument("--lr", type=_positive_float,
                   help=f"default: {d.lr} (LSTM), peak {TD['lr']} (Transformer)")
    t.add_argument("--seed", type=_nonneg_int, default=d.seed)
    t.add_argument("--out", metavar="DIR",
                   help="run directory (default: runs/lm-NAME-MODEL, numbered if taken)")
    t.add_argument("--resume", metavar="DIR",
                   help="continue the LSTM or Transformer run in DIR (--epochs is the total; "
                        "default: a new run)")
    t.add_argument("--quiet", action="store_true")
    add_reference_and_dtype(t)
    add_threads_option(t)
    add_check_every_option(t)
    add_max_memory(t)
    t.set_defaults(func=cmd_lm_train)

    s = lsub.add_parser("score", help="log-probability and perplexity of each line")
    s.add_argument("--model", required=True, metavar="DIR")
    s.add_argument("--input", metavar="FILE",
                   help="default: standard input; one sentence per line, a blank line is the empty sentence")
    s.add_argument("--rank", action="store_true", help="order the lines from most to least probable")
    s.add_argument("--json", action="store_true", help="print the rows and the total as JSON")
    add_threads_option(s)
    add_max_memory(s)
    s.set_defaults(func=cmd_lm_score)

    g = lsub.add_parser("generate", help="sample sentences from a language model (LSTM, Transformer "
                                         "or n-gram)")
    g.add_argument("--model", required=True, metavar="DIR")
    g.add_argument("--n", type=_positive_int, help="sentences (default: 5; 1 with --greedy)")
    g.add_argument("--temperature", type=_positive_float, default=1.0)
    g.add_argument("--top-k", type=_positive_int, help="sample among the k most probable tokens (default: all)")
    g.add_argument("--greedy", action="store_true",
                   help="the most probable token at every step: one sentence, always the same")
    g.add_argument("--prompt", metavar="TEXT", help="start every sentence with TEXT (default: none)")
    g.add_argument("--max-length", type=_positive_int, default=50)
    g.add_argument("--seed", type=_nonneg_int, default=0)
    add_threads_option(g)
    add_max_memory(g)
    g.set_defaults(func=cmd_lm_generate)

    c = lsub.add_parser("compare", help="test perplexity of n-grams (orders 1-5), an LSTM and a "
                                        "Transformer")
    c.add_argument("--builtin", required=True, choices=["pydoc", "markov", "brackets"])
    c.add_argument("--epochs", type=_positive_int, default=d.epochs)
    c.add_argument("--hidden-size", type=_positive_int, default=d.hidden_size)
    c.add_argument("--emb-size", type=_positive_int, default=d.emb_size)
    c.add_argument("--max-order", type=_positive_int, default=5)
    c.add_argument("--no-transformer", action="store_true",
                   help="leave out the Transformer (whose d_model is --hidden-size, with "
                        f"{TD['layers']} layers, {d.heads} heads, peak lr {TD['lr']})")
    c.add_argument("--seed", type=_nonneg_int, default=0)
    add_threads_option(c)
    c.set_defaults(func=cmd_lm_compare)
    lm.set_defaults(func=lambda args: lm.print_help() or 0)


def _lines(path):
    """Input lines: a file (a bad byte names the file and line) or standard input, as for
    ``minis2s translate``."""
    return _read_lines(path)


# A resumed run keeps the corpus, model and optimisation settings it was started with.
_RESUME_OPTIONS = {"resume", "epochs", "quiet", "threads", "max_memory", "reference", "command",
                   "lm_command", "func", "check_every"}


def _train_defaults() -> dict:
    """``minis2s lm train``'s option defaults, from a parser of its own."""
    parser = _Parser(prog="minis2s")
    add_lm_parser(parser.add_subparsers(dest="command"))
    return vars(parser.parse_args(["lm", "train"]))


_TRANSFORMER_ONLY = ("heads", "ff_size", "positions", "warmup_steps")


def _refuse_meaningless_options(args) -> None:
    """Options that mean nothing for the chosen model are refused, not silently ignored."""
    if args.model == "transformer":
        if args.emb_size is not None and args.emb_size != args.hidden_size:
            raise UsageError(f"--emb-size {args.emb_size} means nothing for --model transformer: "
                             "its word vectors are d_model = --hidden-size wide")
        return
    given = [n for n in _TRANSFORMER_ONLY if getattr(args, n) is not None]
    if given:
        raise UsageError(", ".join("--" + n.replace("_", "-") for n in given)
                         + f" only apply to --model transformer, not --model {args.model}")


def cmd_lm_train(args) -> int:
    import os
    from dataclasses import fields
    from .training import LMConfig, fit_lm
    from ..distributed import world
    from ..memory import lstm_lm_params
    if args.resume:
        if not os.path.isdir(args.resume):
            raise UsageError(f"--resume {args.resume}: no such run directory")
        defaults = _train_defaults()
        given = [name for name, value in vars(args).items()
                 if name not in _RESUME_OPTIONS and value != defaults.get(name)]
        if given:
            raise UsageError("--resume continues the run with the settings it was started with; "
                             "only --epochs, --quiet, --threads, --max-memory and --reference can "
                             "be given, not "
                             + ", ".join("--" + n.replace("_", "-") for n in given))
    elif not (args.corpus or args.builtin):
        raise UsageError("one of the arguments --corpus --builtin is required")
    tune_allocator()
    check_out_dir(args.out)
    from .training import TRANSFORMER_DEFAULTS
    names = {f.name for f in fields(LMConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if not args.resume:
        _refuse_meaningless_options(args)
    if args.model == "transformer":                   # its own defaults where the LSTM's differ
        given = {**TRANSFORMER_DEFAULTS, **given}
        if given["hidden_size"] % given.get("heads", LMConfig.heads):
            raise UsageError(f"--hidden-size {given['hidden_size']} (d_model) must be a multiple "
                             f"of --heads {given.get('heads', LMConfig.heads)}")
    cfg = LMConfig(**given)
    if cfg.model == "lstm" and not args.resume:
        _require_training_memory(f"an LSTM language model with --emb-size {cfg.emb_size} "
                                 f"--hidden-size {cfg.hidden_size} --layers {cfg.layers}",
                                 lstm_lm_params(4, cfg.emb_size, cfg.hidden_size, cfg.layers), "adam")
    if cfg.model == "transformer" and not args.resume:
        from ..memory import transformer_lm_params
        ff = cfg.ff_size or 4 * cfg.hidden_size
        learned = cfg.max_length + 1 if cfg.positions == "learned" else 0
        _require_training_memory(f"a Transformer language model with --hidden-size "
                                 f"{cfg.hidden_size} --layers {cfg.layers} --ff-size {ff}",
                                 transformer_lm_params(4, cfg.hidden_size, cfg.layers, ff, learned),
                                 "adam")
    hidden = (_saved_hidden_size(args.resume) if args.resume
              else cfg.hidden_size if cfg.model in ("lstm", "transformer") else None)
    threads = set_threads(args, hidden)
    comm = world()
    run_info = {"blas_threads": threads["blas_threads"], "threads_reason": threads["threads_reason"]}
    if comm is not None:
        print_data_parallel(saved_train_value(args.resume, "batch_size", cfg.batch_size)
                            if args.resume else cfg.batch_size, threads)
        run_info["ranks"] = comm.size
    elif not cfg.quiet:
        print(threads["header"], flush=True)
    if args.reference:
        run_info["reference_mode"] = True   # how this process ran (log.jsonl), not a setting
    with _warnings_to_stderr(), running_mode(args.reference):
        figures = fit_lm(cfg, log=lambda m: None if cfg.quiet else print(m, flush=True),
                         resume=args.resume, run_info=run_info, comm=comm)
    from ..metrics import format_ppl
    print(f"valid perplexity {format_ppl(figures['valid_ppl'], 0, 3)}  test perplexity "
          f"{format_ppl(figures['test_ppl'], 0, 3)}")
    print(f"model saved in {figures['run_dir']}  ({figures['time']:.0f}s)")
    return 0


def cmd_lm_score(args) -> int:
    """A header line, then one line per input line, in order (or ranked with ``--rank``; the
    columns are the same), then the total (``--json``: the same as one object). Each line is
    stripped as training strips its corpus lines; a blank line is scored as the empty sentence
    (the single event ``</s>`` right after ``<s>``), not skipped, so outputs stay aligned."""
    from .training import load_lm
    lm = load_lm(args.model)
    set_threads(args, _saved_hidden_size(args.model))
    lines = _lines(args.input)
    scores = lm.score([l.strip() for l in lines])
    rows = [{"line": i, "logprob": lp, "tokens": n, "perplexity": math.exp(-lp / max(n, 1)),
             "sentence": line} for i, (line, (lp, n)) in enumerate(zip(lines, scores), 1)]
    if args.rank:
        rows.sort(key=lambda r: -r["logprob"])
    total_lp = sum(r["logprob"] for r in rows)
    total_n = sum(r["tokens"] for r in rows)
    total = {"logprob": total_lp, "tokens": total_n, "perplexity": math.exp(-total_lp / max(total_n, 1))}
    if args.json:
        print(json.dumps({"rows": rows, "total": total}, ensure_ascii=False))
        return 0
    # the same columns with and without --rank: "line" is the input line number
    print("line\tlog-probability\ttokens\tperplexity\tsentence")
    for r in rows:
        print(f"{r['line']}\t{r['logprob']:.4f}\t{r['tokens']}\t{r['perplexity']:.3f}\t{r['sentence']}")
    print(f"total\t{total_lp:.4f}\t{total_n}\t{total['perplexity']:.3f}\t")
    return 0


def cmd_lm_generate(args) -> int:
    """Sentences are printed as they are sampled, a batch at a time: ``--n 100000000`` runs in
    constant memory and its first lines appear at once."""
    from .training import load_lm
    if args.greedy and args.n is not None and args.n > 1:
        raise UsageError(f"--greedy gives one sentence, the same every time; --n {args.n} would "
                         "repeat it (leave out --greedy to sample)")
    n = args.n or (1 if args.greedy else 5)
    lm = load_lm(args.model)
    set_threads(args, _saved_hidden_size(args.model))
    for text in lm.iter_generate(n, args.max_length, args.temperature, args.top_k,
                                 args.greedy, args.prompt, args.seed):
        print(text, flush=True)
    return 0


def cmd_lm_compare(args) -> int:
    from .training import LMConfig, compare
    if not args.no_transformer and args.hidden_size % LMConfig.heads:
        raise UsageError(f"--hidden-size {args.hidden_size} is the Transformer's d_model and must "
                         f"be a multiple of its {LMConfig.heads} heads (or give --no-transformer)")
    tune_allocator()
    print(set_threads(args, args.hidden_size)["header"], flush=True)
    rows, info = compare(args.builtin, dict(epochs=args.epochs, hidden_size=args.hidden_size,
                                            emb_size=args.emb_size, quiet=True),
                         orders=range(1, args.max_order + 1), seed=args.seed,
                         transformer_cfg=False if args.no_transformer else None)
    if info:
        print("corpus: " + ", ".join(f"{k}={v}" for k, v in info.items() if not isinstance(v, (list, dict))))
    width = max(24, *(len(name) for name, _, _ in rows))
    print(f"{'model':<{width}} {'test perplexity':>16} {'time (s)':>9}")
    for name, ppl, seconds in rows:
        print(f"{name:<{width}} {ppl:>16.3f} {seconds:>9.1f}")
    return 0
