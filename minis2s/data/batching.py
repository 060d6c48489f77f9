"""From sentence pairs to padded integer batches (numpy int64 host arrays).

Pipeline::

    pairs --encode_pairs--> id lists --make_batches--> index lists --collate--> Batch

* Source ids end with EOS: ``x1 .. xm EOS``.
* Target ids are framed: ``BOS y1 .. yn EOS``.  ``collate`` splits them into the decoder input
  ``tgt_in = BOS y1 .. yn`` (ids[:-1]) and the prediction target ``tgt_out = y1 .. yn EOS``
  (ids[1:]), so ``tgt_out[:, t]`` is what the decoder should predict after reading
  ``tgt_in[:, :t+1]``.
* Rows are right-padded with PAD (0).

``make_batches`` groups examples of similar length ("bucketing") so little compute is spent on
padding, and shuffles the order of the batches for training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .vocab import PAD


def encode_pairs(pairs, src_tok, tgt_tok, src_vocab, tgt_vocab):
    """Tokenize and encode ``(source, target)`` string pairs.

    Returns ``(src_ids, tgt_ids)``: two lists of id lists, ``src_ids[i] = x.. + [EOS]`` and
    ``tgt_ids[i] = [BOS] + y.. + [EOS]``.  Unknown tokens become UNK.
    """
    src_ids, tgt_ids = [], []
    for src, tgt in pairs:
        src_ids.append(src_vocab.encode(src_tok.tokenize(src), add_eos=True))
        tgt_ids.append(tgt_vocab.encode(tgt_tok.tokenize(tgt), add_bos=True, add_eos=True))
    return src_ids, tgt_ids


@dataclass
class Batch:
    """A padded batch of B examples.

    ============  ======  ==================================================================
    src           (B, S)  source ids ``x1 .. xm EOS``, PAD after
    src_lengths   (B,)    number of non-PAD source ids per row (EOS included)
    tgt_in        (B, T)  decoder input ``BOS y1 .. yn``, PAD after
    tgt_out       (B, T)  decoder target ``y1 .. yn EOS``, PAD after
    tgt_lengths   (B,)    non-PAD positions of ``tgt_in`` / ``tgt_out`` per row (n + 1)
    indices       (B,)    positions of the rows in the dataset
    n_tokens      int     number of non-PAD entries of ``tgt_out`` (= tgt_lengths.sum())
    ============  ======  ==================================================================

    All arrays are numpy int64.
    """

    src: np.ndarray
    src_lengths: np.ndarray
    tgt_in: np.ndarray
    tgt_out: np.ndarray
    tgt_lengths: np.ndarray
    indices: np.ndarray
    n_tokens: int

    def __len__(self) -> int:
        return int(self.src.shape[0])


def pad_sequences(seqs: Sequence[Sequence[int]], pad: int = PAD) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists into a ``(B, L)`` int64 array; also returns the ``(B,)`` lengths.
    ``L`` is the longest length (at least 1)."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    out = np.full((len(seqs), max(int(lengths.max(initial=0)), 1)), pad, dtype=np.int64)
    for row, s in enumerate(seqs):
        out[row, :len(s)] = s
    return out, lengths


def collate(src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]],
            indices: Sequence[int], pad: int = PAD) -> Batch:
    """Gather the examples ``indices`` of ``src_ids`` / ``tgt_ids`` (as made by
    ``encode_pairs``) into a padded ``Batch``, rows in the order of ``indices``."""
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("collate needs at least one index")
    srcs = [src_ids[i] for i in indices]
    tgts = [tgt_ids[i] for i in indices]
    for i, s, t in zip(indices, srcs, tgts):
        if len(s) < 1:
            raise ValueError(f"example {i}: empty source id list (expected ids + [EOS])")
        if len(t) < 2:
            raise ValueError(f"example {i}: target id list {list(t)} is shorter than [BOS, EOS]")
    src, src_lengths = pad_sequences(srcs, pad)
    tgt_in, tgt_lengths = pad_sequences([t[:-1] for t in tgts], pad)
    tgt_out, _ = pad_sequences([t[1:] for t in tgts], pad)
    return Batch(src=src, src_lengths=src_lengths, tgt_in=tgt_in, tgt_out=tgt_out,
                 tgt_lengths=tgt_lengths, indices=np.array(indices, dtype=np.int64),
                 n_tokens=int(tgt_lengths.sum()))


def make_batches(lengths: Sequence[int], batch_size: int, shuffle: bool,
                 rng: np.random.Generator | None = None) -> list[list[int]]:
    """Split dataset positions ``0 .. len(lengths)-1`` into length-bucketed batches.

    Positions are sorted by ``lengths`` (e.g. ``max(len(src), len(tgt))`` per example) and cut
    into consecutive chunks of ``batch_size`` (the last one may be smaller), so each batch holds
    examples of similar length.  With ``shuffle``, examples of equal length are first put in a
    random order and the order of the batches is shuffled, both drawn from ``rng`` (a
    ``numpy.random.Generator``; a fresh unseeded one if None): the result depends only on the
    generator's state.  Without ``shuffle`` the batches come in ascending length order and
    ``rng`` is not used.  Every position appears in exactly one batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    n = lengths.shape[0]
    if shuffle:
        rng = np.random.default_rng() if rng is None else rng
        perm = rng.permutation(n)
        order = perm[np.argsort(lengths[perm], kind="stable")]
    else:
        order = np.argsort(lengths, kind="stable")
    batches = [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    if shuffle:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches
