"""Data: tokenizers, vocabularies, reading parallel text, built-in tasks and batching.

Typical use::

    from minis2s.data import make_task, get_tokenizer, Vocab, encode_pairs, make_batches, collate

    splits = make_task("dates", seed=0)
    tok = get_tokenizer("char")
    vocab = Vocab.build(tok.tokenize(s) for pair in splits["train"] for s in pair)
    src_ids, tgt_ids = encode_pairs(splits["train"], tok, tok, vocab, vocab)
    lengths = [max(len(s), len(t)) for s, t in zip(src_ids, tgt_ids)]
    for idx in make_batches(lengths, 64, shuffle=True, rng=np.random.default_rng(0)):
        batch = collate(src_ids, tgt_ids, idx)      # batch.src (B, S), batch.tgt_in (B, T), ...
"""
from .batching import Batch, collate, encode_pairs, make_batches, pad_sequences
from .parallel import DataError, ParallelData, filter_by_length, read_parallel, read_tsv
from .tasks import (TASKS, TaskSpec, get_task, make_task, number_to_english, number_to_korean,
                    write_task)
from .tokenizers import (TOKENIZERS, CharTokenizer, SpaceTokenizer, Tokenizer, get_tokenizer,
                         tokenizer_from_dict)
from .vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab

__all__ = [
    "Batch", "collate", "encode_pairs", "make_batches", "pad_sequences",
    "DataError", "ParallelData", "filter_by_length", "read_parallel", "read_tsv",
    "TASKS", "TaskSpec", "get_task", "make_task", "number_to_english", "number_to_korean",
    "write_task",
    "TOKENIZERS", "CharTokenizer", "SpaceTokenizer", "Tokenizer", "get_tokenizer",
    "tokenizer_from_dict",
    "BOS", "EOS", "PAD", "SPECIALS", "UNK", "Vocab",
]

from . import bpe  # noqa: E402,F401  (registers the "bpe" tokenizer in TOKENIZERS)
