"""Data preparation for a run, the run-directory lock, and loading a trained model.

``prepare_data`` turns the training options into tokenizers, vocabularies and id lists per split;
the same tokenizers and vocabularies are saved in the run directory so that ``load(DIR)``
translates exactly as the model was trained.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write, read_json, write_json


class RunLock:
    """An OS-level exclusive lock on ``DIR/.lock`` (``fcntl.flock``): a second ``train`` into a
    directory in use is refused. The kernel releases the lock when the process dies, even by
    SIGKILL, so a killed run never blocks its own resume."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / ".lock"
        self.fd = None

    def __enter__(self):
        import fcntl
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise RunInUseError(f"{self.path.parent} is in use by another minis2s process "
                                "(its lock is held); wait for it or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        import fcntl
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False


class RunInUseError(RuntimeError):
    pass


@dataclass
class Prepared:
    src_tokenizer: object
    tgt_tokenizer: object
    src_vocab: object
    tgt_vocab: object
    ids: dict = field(default_factory=dict)        # split -> (src id lists, tgt id lists)
    pairs: dict = field(default_factory=dict)      # split -> [(src text, tgt text)]
    max_length: int = 64
    task: str | None = None
    dropped: int = 0                               # training pairs over max_length
    skipped: int = 0                               # malformed lines skipped

    def save(self, run_dir) -> None:
        run_dir = Path(run_dir)
        write_json(run_dir / "src_vocab.json", self.src_vocab.to_dict())
        write_json(run_dir / "tgt_vocab.json", self.tgt_vocab.to_dict())
        if "train" in self.pairs:
            digests = source_digests(src for src, _ in self.pairs["train"])
            atomic_write(run_dir / TRAIN_SOURCES, lambda f: np.save(f, digests, allow_pickle=False))

    def data_config(self) -> dict:
        return {"src_tokenizer": self.src_tokenizer.to_dict(),
                "tgt_tokenizer": self.tgt_tokenizer.to_dict(),
                "max_length": self.max_length, "task": self.task}


# A digest of every training source (the first 8 bytes of its SHA-256, sorted), so that a later
# ``evaluate`` can tell when its data overlaps what the model was trained on.
TRAIN_SOURCES = "train_sources.npy"


def _digest(source: str) -> int:
    return int.from_bytes(hashlib.sha256(source.encode("utf-8")).digest()[:8], "big")


def source_digests(sources) -> np.ndarray:
    """Sorted unique 64-bit digests (uint64) of source strings."""
    return np.array(sorted({_digest(s) for s in sources}), dtype=np.uint64)


def seen_in_training(run_dir, sources) -> int | None:
    """How many of ``sources`` were training sources of the run in ``run_dir`` (None when the
    run recorded no digest, e.g. one trained before the digest existed)."""
    path = Path(run_dir) / TRAIN_SOURCES
    if not path.is_file():
        return None
    try:
        known = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if known.dtype != np.uint64 or known.ndim != 1:
        return None
    mine = np.array([_digest(s) for s in sources], dtype=np.uint64)
    return int(np.isin(mine, known).sum())


def _warn_skipped(data) -> int:
    """Say how many malformed lines ``--skip-bad-lines`` skipped in one file (a warning)."""
    if data.skipped:
        lines = ", ".join(str(n) for n in data.skipped_lines[:5])
        more = ", ..." if data.skipped > 5 else ""
        warnings.warn(f"{data.path}: skipped {data.skipped} malformed line(s) (line {lines}{more}) "
                      "because of --skip-bad-lines", stacklevel=2)
    return data.skipped


def _read_splits(cfg) -> tuple[dict, str | None, int]:
    """Text pairs per split from a built-in task, TSV files or line-aligned file pairs."""
    from .data.parallel import read_parallel, read_tsv
    from .data.tasks import make_task
    splits, skipped = {}, 0
    if cfg.train or cfg.train_src:
        if cfg.train:
            files = {"train": cfg.train, "valid": cfg.valid, "test": cfg.test}
            for name, path in files.items():
                if path:
                    data = read_tsv(path, skip_bad_lines=cfg.skip_bad_lines)
                    splits[name], skipped = data.pairs, skipped + _warn_skipped(data)
        else:
            files = {"train": (cfg.train_src, cfg.train_tgt), "valid": (cfg.valid_src, cfg.valid_tgt),
                     "test": (cfg.test_src, cfg.test_tgt)}
            for name, (s, t) in files.items():
                if s and t:
                    data = read_parallel(s, t, skip_bad_lines=cfg.skip_bad_lines)
                    splits[name], skipped = data.pairs, skipped + _warn_skipped(data)
        if "valid" not in splits:
            raise ValueError("a validation split is required: give --valid FILE (or --valid-src/--valid-tgt)")
        return splits, None, skipped
    splits = make_task(cfg.task, seed=cfg.seed, n_train=cfg.n_train, n_valid=cfg.n_valid,
                       n_test=cfg.n_test)
    return splits, cfg.task, 0


def _tokenizers(cfg, task, splits):
    from .data.tasks import TASKS
    from .data.tokenizers import get_tokenizer
    if cfg.tokenizer == "bpe":
        from .data.bpe import BPETokenizer
        src = BPETokenizer.train([s for s, _ in splits["train"]], cfg.bpe_merges)
        tgt = BPETokenizer.train([t for _, t in splits["train"]], cfg.bpe_merges)
        return src, tgt
    if cfg.tokenizer:
        return get_tokenizer(cfg.tokenizer), get_tokenizer(cfg.tokenizer)
    if task is not None:
        spec = TASKS[task]
        return get_tokenizer(spec.src_tokenizer), get_tokenizer(spec.tgt_tokenizer)
    return get_tokenizer("char"), get_tokenizer("char")


def tokenizer_from_config(d: dict):
    if d.get("name") == "bpe":
        from .data.bpe import BPETokenizer
        return BPETokenizer.from_dict(d)
    from .data.tokenizers import tokenizer_from_dict
    return tokenizer_from_dict(d)


def prepare_data(cfg, run_dir=None) -> Prepared:
    """Read, tokenize and encode every split. Vocabularies are built from the training split,
    or read from ``run_dir`` when resuming."""
    from .data.parallel import filter_by_length
    from .data.vocab import SPECIALS, Vocab
    splits, task, skipped = _read_splits(cfg)
    if run_dir is not None:
        config = read_json(Path(run_dir) / "config.json")["data"]
        src_tok = tokenizer_from_config(config["src_tokenizer"])
        tgt_tok = tokenizer_from_config(config["tgt_tokenizer"])
        src_vocab = Vocab.load(Path(run_dir) / "src_vocab.json")
        tgt_vocab = Vocab.load(Path(run_dir) / "tgt_vocab.json")
    else:
        src_tok, tgt_tok = _tokenizers(cfg, task, splits)
        src_vocab = tgt_vocab = None
    tokenized = {name: [(src_tok.tokenize(s), tgt_tok.tokenize(t)) for s, t in pairs]
                 for name, pairs in splits.items()}
    # Every split is length-filtered: an over-long validation or test line would otherwise be
    # run through the encoder whole (a 1 MB line is a million LSTM steps). Dropped pairs are
    # said in a warning per split, and the test metrics count only the pairs kept.
    dropped = 0
    for name in list(tokenized):
        total = len(tokenized[name])
        tokenized[name], n = filter_by_length(tokenized[name], cfg.max_length)
        if name == "train":
            dropped = n
        if not tokenized[name]:
            raise ValueError(f"no {name} pair is within --max-length {cfg.max_length} tokens "
                             f"(all {total} are longer)")
        if n:
            warnings.warn(f"{name}: dropped {n} of {total} pairs longer than --max-length "
                          f"{cfg.max_length} tokens", stacklevel=2)
    if src_vocab is None:
        src_vocab = Vocab.build([s for s, _ in tokenized["train"]])
        tgt_vocab = Vocab.build([t for _, t in tokenized["train"]])
        for side, vocab in (("source", src_vocab), ("target", tgt_vocab)):
            if len(vocab) <= len(SPECIALS):     # nothing but PAD, BOS, EOS, UNK
                raise ValueError(f"the {side} vocabulary is empty: the training pairs have no "
                                 f"{side} tokens under this tokenizer")
    prep = Prepared(src_tok, tgt_tok, src_vocab, tgt_vocab, max_length=cfg.max_length, task=task,
                    dropped=dropped, skipped=skipped, pairs=splits)
    for name, toks in tokenized.items():
        prep.ids[name] = _encode(toks, src_vocab, tgt_vocab)
    return prep


def _encode(tokenized, src_vocab, tgt_vocab):
    from .data.vocab import EOS
    src = [src_vocab.encode(s) + [EOS] for s, _ in tokenized]
    tgt = [tgt_vocab.encode(t, add_bos=True, add_eos=True) for _, t in tokenized]
    return src, tgt
