"""``minis2s.load(DIR)``: a trained model with its tokenizers and vocabularies, ready to translate.

    model = minis2s.load("runs/dates")
    model.translate(["23 Nov 2026"], beam_size=5)          # -> ["2026-11-23"]
"""
from __future__ import annotations

import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np

import grad
from .checkpoint import CheckpointError, FORMAT_VERSION, load_checkpoint, read_json
from .models import Seq2Seq
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

    def _encode_sources(self, sentences):
        from .data.vocab import EOS, UNK
        ids, tokens, unknown, truncated = [], [], 0, 0
        for s in sentences:
            toks = self.src_tokenizer.tokenize(s)
            if len(toks) > self.max_length:
                toks, truncated = toks[:self.max_length], truncated + 1
            row = self.src_vocab.encode(toks)
            unknown += sum(1 for i in row if i == UNK)
            ids.append(row + [EOS])
            tokens.append(toks)
        if unknown:
            warnings.warn(f"{unknown} source token(s) not in the vocabulary were mapped to <unk>",
                          stacklevel=3)
        if truncated:
            warnings.warn(f"{truncated} input(s) longer than the model's maximum source length "
                          f"({self.max_length} tokens) were truncated", stacklevel=3)
        return ids, tokens

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
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if not 1 <= n_best <= beam_size:
            raise ValueError(f"n_best ({n_best}) must be between 1 and beam_size ({beam_size})")
        max_len = max_output_length or 2 * self.max_length + 10
        ids, src_tokens = self._encode_sources(sentences)
        results = []
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            lengths = np.array([len(r) for r in chunk], dtype=np.int64)
            src = np.zeros((len(chunk), int(lengths.max())), dtype=np.int64)
            for i, r in enumerate(chunk):
                src[i, :len(r)] = r
            if beam_size == 1:
                out = self.model.greedy(src, lengths, max_len=max_len)
                tokens, scores, att = out.tokens[:, None], out.scores[:, None], out.attention[:, None]
            else:
                out = self.model.beam_search(src, lengths, beam_size=beam_size, n_best=n_best,
                                             length_penalty=length_penalty, max_len=max_len)
                tokens, scores, att = out.tokens, out.scores, out.attention
            for i in range(len(chunk)):
                options = []
                for j in range(n_best):
                    toks = self.tgt_vocab.decode(tokens[i, j].tolist())
                    text = self.tgt_tokenizer.detokenize(toks)
                    length = min(len(toks) + 1, att.shape[2])
                    options.append(Translation(text, toks, float(scores[i, j]),
                                               att[i, j, :length, :int(lengths[i])],
                                               src_tokens[start + i]))
                results.append(options)
        if return_details:
            return [r[0] for r in results] if n_best == 1 else results
        texts = [[o.text for o in r] for r in results]
        return [t[0] for t in texts] if n_best == 1 else texts


def load(run_dir, checkpoint: str = "best") -> Translator:
    """Load the model saved in ``run_dir`` (``best.npz``, else ``last.npz``). Every file is
    checked before it is used (``minis2s.validate``); a bad one raises ``CheckpointError``
    naming it, and a checkpoint is checked against the model's shapes before its data is read."""
    from . import validate
    from .data.vocab import Vocab
    from .memory import MemoryLimitError
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: model directory not found")
    config_path = run_dir / "config.json"
    config = read_json(config_path)
    kind = config.get("kind") if isinstance(config, dict) else None
    if isinstance(kind, str) and kind.startswith("lm-"):
        readers = "'minis2s lm score'" + (" or 'minis2s lm generate'" if kind == "lm-lstm" else "")
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
        model = Seq2Seq(**model_cfg, generator=grad.Generator(0))
    except (TypeError, MemoryLimitError) as exc:
        raise CheckpointError(f"{config_path}: invalid model config ({exc})") from exc
    state = load_checkpoint(path, model=model)    # names and shapes checked before data is read
    try:
        model.load_state_dict(state["model"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: weights do not match the config: {exc}") from exc
    return Translator(model, src_tok, tgt_tok, src_vocab, tgt_vocab, max_length, run_dir)
