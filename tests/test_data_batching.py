"""Tests for minis2s.data.batching: encoding, padding, shifted targets, bucketed batches."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minis2s.data.batching import Batch, collate, encode_pairs, make_batches, pad_sequences
from minis2s.data.tasks import make_task
from minis2s.data.tokenizers import CharTokenizer, SpaceTokenizer
from minis2s.data.vocab import BOS, EOS, PAD, UNK, Vocab


@pytest.fixture
def encoded():
    pairs = [("ab", "x y"), ("abcab", "y"), ("c", "x x x"), ("zz", "q")]
    ct, sp = CharTokenizer(), SpaceTokenizer()
    sv = Vocab.build([ct.tokenize(s) for s, _ in pairs[:3]])
    tv = Vocab.build([sp.tokenize(t) for _, t in pairs[:3]])
    src_ids, tgt_ids = encode_pairs(pairs, ct, sp, sv, tv)
    return pairs, sv, tv, src_ids, tgt_ids


def test_encode_pairs_frames_ids(encoded):
    pairs, sv, tv, src_ids, tgt_ids = encoded
    assert src_ids[0] == [sv.stoi["a"], sv.stoi["b"], EOS]
    assert tgt_ids[0] == [BOS, tv.stoi["x"], tv.stoi["y"], EOS]
    assert src_ids[3] == [UNK, UNK, EOS] and tgt_ids[3] == [BOS, UNK, EOS]
    assert len(src_ids) == len(tgt_ids) == len(pairs)


def test_collate_shapes_padding_and_shift(encoded):
    _, sv, tv, src_ids, tgt_ids = encoded
    b = collate(src_ids, tgt_ids, [1, 0, 2])
    assert isinstance(b, Batch) and len(b) == 3
    for arr in (b.src, b.src_lengths, b.tgt_in, b.tgt_out, b.tgt_lengths, b.indices):
        assert arr.dtype == np.int64
    assert b.src.shape == (3, 6) and b.tgt_in.shape == b.tgt_out.shape == (3, 4)
    assert b.src_lengths.tolist() == [6, 3, 2]
    assert b.tgt_lengths.tolist() == [2, 3, 4]
    assert b.indices.tolist() == [1, 0, 2]
    assert b.src[1].tolist() == src_ids[0] + [PAD] * 3
    # row 0 is example 1: target "y" -> BOS y EOS
    y = tv.stoi["y"]
    assert b.tgt_in[0].tolist() == [BOS, y, PAD, PAD]
    assert b.tgt_out[0].tolist() == [y, EOS, PAD, PAD]
    for row, i in enumerate(b.indices):
        n = b.tgt_lengths[row]
        assert b.tgt_in[row, :n].tolist() == tgt_ids[i][:-1]
        assert b.tgt_out[row, :n].tolist() == tgt_ids[i][1:]
        assert (b.tgt_in[row, n:] == PAD).all() and (b.tgt_out[row, n:] == PAD).all()
        assert (b.src[row, b.src_lengths[row]:] == PAD).all()
        assert b.src[row, b.src_lengths[row] - 1] == EOS
    assert b.n_tokens == int((b.tgt_out != PAD).sum()) == 9
    assert (b.tgt_in[:, 0] == BOS).all()


def test_collate_custom_pad_and_errors(encoded):
    _, _, _, src_ids, tgt_ids = encoded
    b = collate(src_ids, tgt_ids, [0, 1], pad=-1)
    assert b.src[0, -1] == -1
    with pytest.raises(ValueError):
        collate(src_ids, tgt_ids, [])
    with pytest.raises(ValueError, match="example 0"):
        collate([[5, EOS]], [[BOS]], [0])


def test_pad_sequences():
    arr, lengths = pad_sequences([[1, 2, 3], [4]])
    assert arr.tolist() == [[1, 2, 3], [4, 0, 0]] and lengths.tolist() == [3, 1]


# ----------------------------------------------------------------------------- make_batches
def test_every_index_once_per_epoch_and_sizes():
    lengths = list(np.random.default_rng(0).integers(1, 30, size=103))
    for shuffle in (False, True):
        batches = make_batches(lengths, 10, shuffle, np.random.default_rng(1))
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(103))
        assert len(batches) == 11 and sorted(len(b) for b in batches)[0] == 3
        assert all(len(b) <= 10 for b in batches)
        assert all(isinstance(i, int) for i in flat)


def test_unshuffled_batches_are_sorted_and_deterministic():
    lengths = [5, 1, 4, 1, 3, 2, 2]
    batches = make_batches(lengths, 3, shuffle=False)
    assert batches == [[1, 3, 5], [6, 4, 2], [0]]
    assert make_batches(lengths, 3, shuffle=False, rng=np.random.default_rng(9)) == batches


def test_shuffled_batches_depend_only_on_rng_state():
    lengths = [len(s) for s, _ in make_task("reverse", seed=0, n_train=500, n_valid=0,
                                            n_test=0)["train"]]
    a = make_batches(lengths, 32, True, np.random.default_rng([7, 1]))
    assert a == make_batches(lengths, 32, True, np.random.default_rng([7, 1]))
    assert a != make_batches(lengths, 32, True, np.random.default_rng([7, 2]))
    # batch order is shuffled, not ascending
    firsts = [lengths[b[0]] for b in a]
    assert firsts != sorted(firsts)


def test_buckets_have_similar_lengths():
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 60, size=1000).tolist()
    batches = make_batches(lengths, 50, True, rng)
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    # consecutive chunks of a sorted list: their ranges do not overlap
    assert sum(spreads) <= max(lengths) - min(lengths)
    assert max(spreads) <= 6


def test_make_batches_rejects_bad_batch_size():
    with pytest.raises(ValueError):
        make_batches([1, 2], 0, False)
    assert make_batches([], 4, True, np.random.default_rng(0)) == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 20), max_size=60), st.integers(1, 9), st.booleans(),
       st.integers(0, 2 ** 32 - 1))
def test_make_batches_partitions_the_dataset(lengths, batch_size, shuffle, seed):
    batches = make_batches(lengths, batch_size, shuffle, np.random.default_rng(seed))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert len(batches) == -(-len(lengths) // batch_size)
    assert sum(len(b) < batch_size for b in batches) <= 1
