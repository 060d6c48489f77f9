"""Checks of what a run directory holds, before any of it is used.

A run directory is user data: a ``config.json`` may be edited by hand, copied from another run
or crafted, and a checkpoint may come from another run. Everything read from one is checked
here first, so that a bad file is one ``CheckpointError`` naming it (exit code 2 from the
command), never a ``TypeError`` traceback deep in model code, a model built from nonsense sizes,
or an optimizer silently continued from another optimizer's state:

* ``seq2seq_model_config`` / ``lstm_lm_model_config``: the ``model`` entry of ``config.json``
  (types and ranges of every size; sizes that cannot fit in memory are refused when the model is
  built, ``minis2s.memory``);
* ``resume_config``: the ``train`` entry a resumed ``minis2s train`` continues with;
* ``restore_checkpoint``: a resume checkpoint -- declared shapes against the model before any
  data is read (``minis2s.checkpoint.load_checkpoint``), the optimizer's kind and state, and the
  trainer state the run continues from.
"""
from __future__ import annotations

import math
from pathlib import Path

from .checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint


# ----------------------------------------------------------------------------- values
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check(ok: bool, path, entry: str, value, expected: str) -> None:
    if not ok:
        raise CheckpointError(f"{path}: {entry} is {value!r}, expected {expected}")


def _positive_int(d, key, path, entry):
    _check(_is_int(d[key]) and d[key] >= 1, path, f"{entry}{key}", d[key], "a positive integer")


def _unit_open(d, key, path, entry):
    _check(_is_number(d[key]) and 0 <= d[key] < 1, path, f"{entry}{key}", d[key],
           "a number in [0, 1)")


def _object(value, path, what: str) -> dict:
    if value is None:
        raise CheckpointError(f"{path}: {what} is missing")
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: {what} is a {type(value).__name__}, expected a JSON object")
    return value


def run_config(config, path) -> dict:
    """A ``config.json``: a JSON object of this format version."""
    _object(config, path, "the file")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: model format version {version}, this minis2s reads "
                              f"version {FORMAT_VERSION}")
    return config


def _known_keys(d: dict, known, path, entry: str) -> None:
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise CheckpointError(f"{path}: unknown key(s) in {entry}: {', '.join(map(str, unknown))}")


# ----------------------------------------------------------------------------- model entries
_SEQ2SEQ_KEYS = ("src_vocab_size", "tgt_vocab_size", "emb_size", "hidden_size", "num_layers",
                 "dropout", "pad_idx", "attention", "input_feeding")


_TRANSFORMER_KEYS = ("arch", "src_vocab_size", "tgt_vocab_size", "d_model", "nhead",
                     "num_encoder_layers", "num_decoder_layers", "dim_feedforward", "dropout",
                     "pad_idx", "positions", "max_positions", "share_embeddings", "norm_first")


def _dropout_and_pad(d, path, e) -> None:
    """The two entries every translation model's config shares: ``dropout`` and ``pad_idx``."""
    if "dropout" in d:
        _unit_open(d, "dropout", path, e)
    if "pad_idx" in d:
        v = d["pad_idx"]
        _check(_is_int(v) and 0 <= v < min(d["src_vocab_size"], d["tgt_vocab_size"]), path,
               e + "pad_idx", v, "an id inside both vocabularies")


def transformer_model_config(d: dict, path) -> dict:
    """The ``model`` entry of a Transformer translation run: the keyword arguments of
    ``minis2s.models.transformer.TransformerSeq2Seq`` (plus ``"arch": "transformer"``)."""
    _known_keys(d, _TRANSFORMER_KEYS, path, "'model'")
    e = "model."
    for key in ("src_vocab_size", "tgt_vocab_size", "d_model", "nhead", "num_encoder_layers",
                "num_decoder_layers", "dim_feedforward", "max_positions"):
        if key not in d:
            raise CheckpointError(f"{path}: the 'model' entry has no {key!r}")
        _positive_int(d, key, path, e)
    _check(d["d_model"] % d["nhead"] == 0, path, e + "d_model", d["d_model"],
           f"a multiple of nhead ({d['nhead']})")
    _dropout_and_pad(d, path, e)
    if "positions" in d:
        _check(d["positions"] in ("sinusoidal", "learned"), path, e + "positions",
               d["positions"], "'sinusoidal' or 'learned'")
    for key in ("share_embeddings", "norm_first"):
        if key in d:
            _check(isinstance(d[key], bool), path, e + key, d[key], "true or false")
    if d.get("share_embeddings"):
        _check(d["src_vocab_size"] == d["tgt_vocab_size"], path, e + "share_embeddings", True,
               "false when the vocabularies differ in size")
    return d


def seq2seq_model_config(model_cfg, path) -> dict:
    """The ``model`` entry of a translation run's ``config.json``: the keyword arguments of
    ``minis2s.models.Seq2Seq`` (or, with ``"arch": "transformer"``, of ``TransformerSeq2Seq``),
    each of the right type and range."""
    d = _object(model_cfg, path, "the 'model' entry")
    if "arch" in d:
        _check(d["arch"] == "transformer", path, "model.arch", d["arch"],
               "'transformer' (an LSTM model has no 'arch' entry)")
        return transformer_model_config(d, path)
    _known_keys(d, _SEQ2SEQ_KEYS, path, "'model'")
    for key in ("src_vocab_size", "tgt_vocab_size"):
        if key not in d:
            raise CheckpointError(f"{path}: the 'model' entry has no {key!r}")
    e = "model."
    for key in ("src_vocab_size", "tgt_vocab_size", "emb_size", "hidden_size", "num_layers"):
        if key in d:
            _positive_int(d, key, path, e)
    if "hidden_size" in d:
        _check(d["hidden_size"] % 2 == 0, path, e + "hidden_size", d["hidden_size"],
               "an even number (two encoder directions)")
    _dropout_and_pad(d, path, e)
    if "attention" in d:
        _check(d["attention"] in ("general", "dot", None), path, e + "attention", d["attention"],
               "'general', 'dot' or null")
    if "input_feeding" in d:
        _check(isinstance(d["input_feeding"], bool), path, e + "input_feeding",
               d["input_feeding"], "true or false")
    return d


_LM_KEYS = ("vocab_size", "emb_size", "hidden_size", "num_layers", "dropout", "pad_idx", "tie_weights")


def lstm_lm_model_config(model_cfg, path) -> dict:
    """The ``model`` entry of an LSTM language model's ``config.json``: the keyword arguments of
    ``minis2s.lm.lstm_lm.LSTMLanguageModel``."""
    d = _object(model_cfg, path, "the 'model' entry")
    _known_keys(d, _LM_KEYS, path, "'model'")
    if "vocab_size" not in d:
        raise CheckpointError(f"{path}: the 'model' entry has no 'vocab_size'")
    e = "model."
    for key in ("vocab_size", "emb_size", "hidden_size", "num_layers"):
        if key in d:
            _positive_int(d, key, path, e)
    if "dropout" in d:
        _unit_open(d, "dropout", path, e)
    if "pad_idx" in d:
        _check(_is_int(d["pad_idx"]) and 0 <= d["pad_idx"] < d["vocab_size"], path, e + "pad_idx",
               d["pad_idx"], "an id inside the vocabulary")
    if "tie_weights" in d:
        _check(isinstance(d["tie_weights"], bool), path, e + "tie_weights", d["tie_weights"],
               "true or false")
    return d


_TRANSFORMER_LM_KEYS = ("vocab_size", "d_model", "nhead", "num_layers", "dim_feedforward",
                        "dropout", "pad_idx", "positions", "max_len", "tie_weights")


def transformer_lm_model_config(model_cfg, path) -> dict:
    """The ``model`` entry of a Transformer language model's ``config.json``: the keyword
    arguments of ``minis2s.lm.transformer_lm.TransformerLanguageModel``."""
    d = _object(model_cfg, path, "the 'model' entry")
    _known_keys(d, _TRANSFORMER_LM_KEYS, path, "'model'")
    for key in ("vocab_size", "d_model", "nhead"):
        if key not in d:
            raise CheckpointError(f"{path}: the 'model' entry has no {key!r}")
    e = "model."
    for key in ("vocab_size", "d_model", "nhead", "num_layers", "dim_feedforward", "max_len"):
        if key in d:
            _positive_int(d, key, path, e)
    _check(d["d_model"] % d["nhead"] == 0, path, e + "d_model", d["d_model"],
           f"a multiple of model.nhead ({d['nhead']})")
    if "dropout" in d:
        _unit_open(d, "dropout", path, e)
    if "pad_idx" in d:
        _check(_is_int(d["pad_idx"]) and 0 <= d["pad_idx"] < d["vocab_size"], path, e + "pad_idx",
               d["pad_idx"], "an id inside the vocabulary")
    if "positions" in d:
        _check(d["positions"] in ("sinusoidal", "learned"), path, e + "positions", d["positions"],
               "'sinusoidal' or 'learned'")
    if "tie_weights" in d:
        _check(isinstance(d["tie_weights"], bool), path, e + "tie_weights", d["tie_weights"],
               "true or false")
    return d


# ----------------------------------------------------------------------------- train options
def _choice(*options):
    return lambda v: v in options, " or ".join(repr(o) for o in options)


_POSITIVE_INT = (lambda v: _is_int(v) and v >= 1, "a positive integer")
_OPTIONAL_POSITIVE_INT = (lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer or null")
_OPEN_UNIT = (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
_TRAIN_CHECKS = {
    "emb_size": _POSITIVE_INT,
    "arch": _choice("lstm", "transformer"), "heads": _OPTIONAL_POSITIVE_INT,
    "encoder_layers": _OPTIONAL_POSITIVE_INT, "decoder_layers": _OPTIONAL_POSITIVE_INT,
    "ff_size": _OPTIONAL_POSITIVE_INT, "warmup_steps": _OPTIONAL_POSITIVE_INT,
    "positions": (lambda v: v in (None, "sinusoidal", "learned"), "'sinusoidal', 'learned' or null"),
    "share_embeddings": (lambda v: isinstance(v, bool), "true or false"),
    "norm_first": (lambda v: isinstance(v, bool), "true or false"),
    "layers": _POSITIVE_INT, "epochs": _POSITIVE_INT, "batch_size": _POSITIVE_INT,
    "max_length": _POSITIVE_INT, "bpe_merges": _POSITIVE_INT,
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "dropout": _OPEN_UNIT, "label_smoothing": _OPEN_UNIT,
    "tf_ratio": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "lr": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "max_grad_norm": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "optimizer": _choice("adam", "sgd"), "attention": _choice("general", "dot", "none"),
    "nan_policy": _choice("stop", "skip"),
    "select_metric": (lambda v: v in (None, "loss", "exact_match", "bleu"),
                      "'loss', 'exact_match', 'bleu' or null"),
    "lr_decay_start": _OPTIONAL_POSITIVE_INT, "patience": _OPTIONAL_POSITIVE_INT,
    "n_train": _OPTIONAL_POSITIVE_INT, "n_valid": _OPTIONAL_POSITIVE_INT,
    "n_test": _OPTIONAL_POSITIVE_INT, "valid_decode_limit": _OPTIONAL_POSITIVE_INT,
    "input_feeding": (lambda v: isinstance(v, bool), "true or false"),
    "skip_bad_lines": (lambda v: isinstance(v, bool), "true or false"),
}


def resume_config(config, path, fields) -> dict:
    """The ``train`` entry of a translation run's ``config.json``, as ``minis2s train --resume``
    continues with it: only the names in ``fields`` (``TrainConfig``'s), each valid."""
    run_config(config, path)
    kind = config.get("kind")
    if kind not in (None, "seq2seq"):          # runs written before "kind" existed have none
        raise CheckpointError(f"{path}: a {kind} run, not a translation run; continue it with the "
                              "command that trained it")
    data = _object(config.get("data"), path, "the 'data' entry")
    from .runs import tokenizer_from_config
    for side in ("src_tokenizer", "tgt_tokenizer"):
        try:
            tokenizer_from_config(data[side])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: unusable data.{side} ({type(exc).__name__}: {exc})") from exc
    train = _object(config.get("train"), path, "the 'train' entry")
    _known_keys(train, fields, path, "'train'")
    for key, (ok, expected) in _TRAIN_CHECKS.items():
        if key in train:
            _check(ok(train[key]), path, f"train.{key}", train[key], expected)
    if "hidden_size" in train:
        v = train["hidden_size"]
        if train.get("arch", "lstm") == "transformer":   # d_model
            _check(_is_int(v) and v >= 1, path, "train.hidden_size", v, "a positive integer")
        else:                                            # two encoder directions
            _check(_is_int(v) and v >= 2 and v % 2 == 0, path, "train.hidden_size", v,
                   "an even positive integer")
    if any(k in train for k in ("tf_schedule", "tf_decay", "tf_min")):   # minis2s.tf_schedule
        from .tf_schedule import check_tf_schedule
        try:
            check_tf_schedule(train.get("tf_schedule", "constant"), train.get("tf_ratio", 1.0),
                              train.get("tf_decay"), train.get("tf_min", 0.0))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: train: {exc}") from None
    return config


# ----------------------------------------------------------------------------- checkpoints
_OPTIMIZERS = {    # class name: (hyper-parameters, per-parameter arrays, per-parameter scalars)
    "SGD": ({"lr", "momentum", "weight_decay"}, {"momentum_buffer"}, set()),
    "Adam": ({"lr", "betas", "eps", "weight_decay"}, {"exp_avg", "exp_avg_sq"}, {"step"}),
}


def optimizer_state(state, optimizer, path) -> None:
    """A saved optimizer state must be of ``optimizer``'s kind (its hyper-parameter names), one
    state per parameter, with that kind's entries of the right types."""
    if state is None:
        raise CheckpointError(f"{path}: holds no optimizer state, so training cannot continue "
                              "from it")
    own = type(optimizer).__name__
    hyper, arrays, scalars = _OPTIMIZERS[own]
    groups = state["param_groups"]
    if len(groups) != 1:
        raise CheckpointError(f"{path}: {len(groups)} optimizer parameter groups, expected 1")
    saved = set(groups[0]) - {"params"}
    if saved != hyper:
        kind = next((k for k, v in _OPTIMIZERS.items() if v[0] == saved), None)
        what = f"{kind}'s" if kind else "of an unknown optimizer"
        raise CheckpointError(f"{path}: the optimizer state is {what} ({', '.join(sorted(saved))}), "
                              f"but this run uses {own} ({', '.join(sorted(hyper))})")
    g = groups[0]
    for key in ("lr", "eps", "weight_decay", "momentum"):
        if key in g:
            _check(_is_number(g[key]) and g[key] >= 0 and (key != "lr" or g[key] > 0), path,
                   f"optimizer {key}", g[key], "a finite number >= 0")
    if "betas" in g:
        b = g["betas"]
        _check(isinstance(b, list) and len(b) == 2 and all(_is_number(x) and 0 <= x < 1 for x in b),
               path, "optimizer betas", b, "two numbers in [0, 1)")
    per_param = state["state"]
    if len(per_param) != len(optimizer.params):
        raise CheckpointError(f"{path}: optimizer state for {len(per_param)} parameters, the model "
                              f"has {len(optimizer.params)}")
    for i, entry in enumerate(per_param):
        keys = set(entry)
        if keys and keys != arrays | scalars and not (own == "SGD" and keys == arrays):
            raise CheckpointError(f"{path}: optimizer state {i} holds {', '.join(sorted(keys))}; "
                                  f"{own} keeps {', '.join(sorted(arrays | scalars))}")
        for key in keys & arrays:
            _check(hasattr(entry[key], "shape") and entry[key].ndim > 0, path,
                   f"optimizer state {i} {key}", type(entry[key]).__name__, "an array")
        for key in keys & scalars:
            _check(_is_int(entry[key]) and entry[key] >= 1, path, f"optimizer state {i} {key}",
                   entry[key], "a positive integer")


def _generator_state(value) -> bool:
    import grad
    try:
        grad.Generator(0).load_state_dict(value)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
        return False
    return True


_NUMBER_OR_NONE = (lambda v: v is None or _is_number(v), "a number or null")
_COUNT = (lambda v: _is_int(v) and v >= 0, "an integer >= 0")
SEQ2SEQ_TRAINER = {       # the trainer state minis2s train saves and resumes from
    "epoch": _COUNT, "iteration": _COUNT, "iteration_in_epoch": _COUNT,
    "best": _NUMBER_OR_NONE, "bad_epochs": _COUNT, "skipped": _COUNT,
    "lr": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "tf_generator": (_generator_state, "a random generator state"),
    "epoch_sums": (lambda v: isinstance(v, list) and len(v) == 4 and all(_is_number(x) for x in v),
                   "a list of 4 numbers"),
}
SEQ2SEQ_TRAINER_OPTIONAL = {
    "dropout_generator": (lambda v: v is None or _generator_state(v), "a random generator state or null"),
    "best_loss": _NUMBER_OR_NONE,     # the valid loss of the best epoch (the tie-break)
}


def trainer_state(state, path, required=None, optional=None) -> dict:
    """The trainer state of a resume checkpoint: every ``required`` entry present and valid."""
    required = SEQ2SEQ_TRAINER if required is None else required
    optional = SEQ2SEQ_TRAINER_OPTIONAL if optional is None else optional
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path}: the trainer state lacks {', '.join(missing)}; not a "
                              "checkpoint training can continue from")
    for key, (ok, expected) in {**required, **optional}.items():
        if key in state:
            _check(ok(state[key]), path, f"trainer {key}", state[key], expected)
    return state


def restore_checkpoint(path, model, optimizer, required=None, optional=None) -> dict:
    """Load the resume checkpoint ``path`` into ``model`` and ``optimizer`` and return its
    trainer state; any mismatch (another model size or task, another optimizer, a damaged
    state) is a ``CheckpointError`` naming ``path``, raised before the model is changed."""
    path = Path(path)
    ckpt = load_checkpoint(path, model=model)
    optimizer_state(ckpt["optimizer"], optimizer, path)
    state = trainer_state(ckpt["trainer"], path, required, optional)
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: does not match this run: {exc}") from exc
    return state
