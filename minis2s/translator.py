"""``minis2s.load(DIR)``: a trained model with its tokenizers and vocabularies, ready to translate.

    model = minis2s.load("runs/dates")
    model.translate(["23 Nov 2026"], beam_size=5)          # -> ["2026-11-23"]
"""
from __future__ import annotations

import itertools
import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint, read_json
from .runs import tokenizer_from_config

Translation = namedtuple("Translation", ["text", "tokens", "score", "attention", "source_tokens"])


class Translator:
    """A trained model plus everything needed to go from text to text."""

    def __init__(self, model, src_tokenizer, tgt_tokenizer, src_vocab, tgt_vocab, max_length,
                 run_dir=None):
        self.model, self.run_dir = model.eval(), run_dir
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.max_length = max_length

    def _encode_sources(self, sentences, counts: dict):
        """Id rows (EOS appended) and source tokens; unknown and truncated inputs are added to
        ``counts``, which the caller turns into one warning each."""
        from .data.vocab import EOS, UNK
        ids, tokens = [], []
        for s in sentences:
            toks = self.src_tokenizer.tokenize(s)
            if len(toks) > self.max_length:
                toks, counts["truncated"] = toks[:self.max_length], counts["truncated"] + 1
            row = self.src_vocab.encode(toks)
            counts["unknown"] += sum(1 for i in row if i == UNK)
            seen = counts.setdefault("unknown_tokens", [])     # distinct, in order of appearance
            seen += [t for t, i in zip(toks, row) if i == UNK and t not in seen]
            ids.append(row + [EOS])
            tokens.append(toks)
        return ids, tokens

    @staticmethod
    def _warn(counts: dict) -> None:
        if counts["unknown"]:
            seen = counts.get("unknown_tokens", [])
            shown = ", ".join(repr(t) for t in seen[:5])
            more = f" (the first 5 of {len(seen)} shown)" if len(seen) > 5 else ""
            warnings.warn(f"{counts['unknown']} source token(s) not in the vocabulary were mapped "
                          f"to <unk>: {shown}{more}", stacklevel=3)
        if counts["truncated"]:
            warnings.warn(f"{counts['truncated']} input(s) longer than the model's maximum source "
                          f"length ({counts['max_length']} tokens) were truncated", stacklevel=3)

    def translate(self, sentences, beam_size: int = 5, n_best: int = 1,
                  length_penalty: float = 0.0, max_output_length: int | None = None,
                  batch_size: int = 64, return_details: bool = False):
        """Translate a list of strings, keeping their order.

        Returns a list of strings (``n_best == 1``) or of lists of strings; with
        ``return_details=True``, ``Translation`` tuples (text, tokens, score, attention
        ``(output length, source length)``, source tokens) instead of strings.
        """
        if isinstance(sentences, str):
            raise TypeError("translate() takes a list of strings; wrap a single sentence in a list")
        results = list(self.translate_stream(sentences, beam_size, n_best, length_penalty,
                                             max_output_length, batch_size))
        if return_details:
            return results
        return [r.text for r in results] if n_best == 1 else [[o.text for o in r] for r in results]

    def translate_stream(self, sentences, beam_size: int = 5, n_best: int = 1,
                         length_penalty: float = 0.0, max_output_length: int | None = None,
                         batch_size: int = 64):
        """Translate an iterable of strings lazily: read ``batch_size`` of them, translate them,
        yield their results in input order, and only then read on, so a reader of the output (a
        file being written, Ctrl-C) has every finished line. Yields a ``Translation`` per
        sentence (``n_best == 1``) or a list of ``n_best`` of them. The warnings about unknown
        tokens and truncated inputs come once, when the input is exhausted."""
        if isinstance(sentences, str):
            raise TypeError("translate_stream() takes an iterable of strings, not one string")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if not 1 <= n_best <= beam_size:
            raise ValueError(f"n_best ({n_best}) must be between 1 and beam_size ({beam_size})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        max_len = max_output_length or 2 * self.max_length + 10
        counts = {"unknown": 0, "truncated": 0, "max_length": self.max_length}
        lines = iter(sentences)
        while True:
            chunk = list(itertools.islice(lines, batch_size))
            if not chunk:
                break
            ids, src_tokens = self._encode_sources(chunk, counts)
            for options in self._translate_batch(ids, src_tokens, beam_size, n_best,
                                                 length_penalty, max_len):
                yield options[0] if n_best == 1 else options
        self._warn(counts)

    def _translate_batch(self, ids, src_tokens, beam_size, n_best, length_penalty, max_len):
        """One batch of id rows -> a list of ``n_best`` ``Translation``s per row."""
        lengths = np.array([len(r) for r in ids], dtype=np.int64)
        src = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)
        for i, r in enumerate(ids):
            src[i, :len(r)] = r
        if beam_size == 1:
            out = self.model.greedy(src, lengths, max_len=max_len)
            tokens, scores, att = out.tokens[:, None], out.scores[:, None], out.attention[:, None]
        else:
            out = self.model.beam_search(src, lengths, beam_size=beam_size, n_best=n_best,
                                         length_penalty=length_penalty, max_len=max_len)
            tokens, scores, att = out.tokens, out.scores, out.attention
        results = []
        for i in range(len(ids)):
            options = []
            for j in range(n_best):
                toks = self.tgt_vocab.decode(tokens[i, j].tolist())
                text = self.tgt_tokenizer.detokenize(toks)
                length = min(len(toks) + 1, att.shape[2])
                options.append(Translation(text, toks, float(scores[i, j]),
                                           att[i, j, :length, :int(lengths[i])], src_tokens[i]))
            results.append(options)
        return results


def load(run_dir, checkpoint: str = "best") -> Translator:
    """Load the model saved in ``run_dir`` (``best.npz``, else ``last.npz``). Every file is
    checked before it is used (``minis2s.validate``); a bad one raises ``CheckpointError``
    naming it, and a checkpoint is checked against the model's shapes before its data is read."""
    from . import validate
    from .data.vocab import Vocab
    from .memory import MemoryLimitError
    from .train import build_model
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: model directory not found")
    config_path = run_dir / "config.json"
    config = read_json(config_path)
    kind = config.get("kind") if isinstance(config, dict) else None
    if isinstance(kind, str) and kind.startswith("lm-"):
        readers = "'minis2s lm score'" + (" or 'minis2s lm generate'" if kind in ("lm-lstm", "lm-transformer") else "")
        raise CheckpointError(f"{run_dir}: a language-model run ({kind}), not a translation model; "
                              f"read it with {readers} --model {run_dir}")
    validate.run_config(config, config_path)
    model_cfg = validate.seq2seq_model_config(config.get("model"), config_path)
    try:
        data_cfg = config["data"]
        src_tok = tokenizer_from_config(data_cfg["src_tokenizer"])
        tgt_tok = tokenizer_from_config(data_cfg["tgt_tokenizer"])
        max_length = data_cfg.get("max_length", 64)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{config_path}: incomplete or invalid config ({exc})") from exc
    if not (isinstance(max_length, int) and not isinstance(max_length, bool) and max_length >= 1):
        raise CheckpointError(f"{config_path}: data.max_length is {max_length!r}, expected a "
                              "positive integer")
    vocabs = []
    for name in ("src_vocab.json", "tgt_vocab.json"):
        vocab_path = run_dir / name
        if not vocab_path.is_file():
            raise CheckpointError(f"{vocab_path}: file not found")
        try:
            vocabs.append(Vocab.load(vocab_path))
        except ValueError as exc:                    # its message names the file
            raise CheckpointError(str(exc)) from exc
        except OSError as exc:
            raise CheckpointError(f"{vocab_path}: cannot read ({exc.strerror or exc})") from exc
    src_vocab, tgt_vocab = vocabs
    for side, vocab in (("src", src_vocab), ("tgt", tgt_vocab)):
        if len(vocab) != model_cfg.get(f"{side}_vocab_size"):
            raise CheckpointError(f"{run_dir / (side + '_vocab.json')}: {len(vocab)} tokens, but the "
                                  f"model was configured for {model_cfg.get(side + '_vocab_size')}")
    path = run_dir / f"{checkpoint}.npz"
    if not path.exists() and checkpoint == "best":
        path = run_dir / "last.npz"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        model = build_model(model_cfg, 0)
    except (TypeError, ValueError, MemoryLimitError) as exc:
        raise CheckpointError(f"{config_path}: invalid model config ({exc})") from exc
    state = load_checkpoint(path, model=model)    # names and shapes checked before data is read
    if {str(a.dtype) for a in state["model"].values()} == {"float64"}:
        model.to("float64")                       # a --dtype float64 run decodes in float64
    try:
        model.load_state_dict(state["model"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: weights do not match the config: {exc}") from exc
    return Translator(model, src_tok, tgt_tok, src_vocab, tgt_vocab, max_length, run_dir)
