"""The seq2seq model: attention, teacher forcing, input feeding, greedy and beam search."""
import itertools
import math

import numpy as np
import pytest

import grad
from grad import backend as B
from grad import functional as F
from grad.tensor import Tensor, no_grad
from minis2s.models import LuongAttention, Seq2Seq
from minis2s.search import length_penalty

from helpers import BACKENDS

SRC = np.array([[4, 5, 6, 7, 2], [8, 9, 2, 0, 0], [5, 2, 0, 0, 0]])
SRC_LEN = np.array([5, 3, 2])
TGT_IN = np.array([[1, 4, 5, 6], [1, 7, 0, 0], [1, 8, 9, 0]])
TGT_OUT = np.array([[4, 5, 6, 2], [7, 2, 0, 0], [8, 9, 2, 0]])


def tiny(attention="general", input_feeding=True, layers=2, seed=0, dtype="float64", vocab=(12, 11),
         hidden=8, emb=6):
    model = Seq2Seq(vocab[0], vocab[1], emb_size=emb, hidden_size=hidden, num_layers=layers,
                    dropout=0.0, attention=attention, input_feeding=input_feeding,
                    generator=grad.Generator(seed))
    return model.to(dtype)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("attention,feeding", [("general", True), ("general", False), ("dot", True), (None, True)])
def test_seq2seq_loss_gradcheck(attention, feeding):
    """Every parameter of the whole model: 48 sampled coordinates per tensor plus one random
    direction through all of them at once."""
    model = tiny(attention, feeding)
    assert grad.gradcheck(lambda: model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT), [],
                          params=list(model.parameters()), max_coordinates=48)


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_seq2seq_loss_gradcheck_other_backends(backend):
    """The same check on the other backends, with fewer sampled coordinates (array_api_strict is
    slow); the random direction still covers every parameter."""
    with B.use(backend):
        model = tiny("general", True)
        assert grad.gradcheck(lambda: model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT), [],
                              params=list(model.parameters()), max_coordinates=4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["general", "dot"])
def test_attention_gradcheck_with_mask(backend, kind):
    with B.use(backend):
        gen = grad.Generator(1)
        att = LuongAttention(5, kind, generator=gen).double()
        h = grad.randn(2, 5, generator=gen, dtype="float64", requires_grad=True)
        memory = grad.randn(2, 4, 5, generator=gen, dtype="float64", requires_grad=True)
        mask = B.from_numpy(np.array([[False, False, True, True], [False, False, False, False]]))
        params = list(att.parameters())
        # The composed path: both outputs (h~ and the attention weights) are differentiable.
        assert grad.gradcheck(lambda h, m: att(h, m, mask, fused=False), [h, memory], params=params)
        # The fused path returns the weights for inspection only; h~ carries the gradient.
        assert grad.gradcheck(lambda h, m: att(h, m, mask)[0], [h, memory], params=params)


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["general", "dot"])
def test_fused_attention_equals_the_composed_reference(backend, kind):
    """Outputs, weights and the gradients of every input and parameter agree to 1e-12."""
    with B.use(backend):
        gen = grad.Generator(3)
        att = LuongAttention(5, kind, generator=gen).double()
        pad = B.from_numpy(np.array([[False, False, False, True], [False, False, False, False]]))
        results = []
        for fused in (True, False):
            h = grad.randn(2, 5, generator=grad.Generator(4), dtype="float64", requires_grad=True)
            memory = grad.randn(2, 4, 5, generator=grad.Generator(5), dtype="float64", requires_grad=True)
            att.zero_grad()
            h_tilde, weights = att(h, memory, pad, fused=fused)
            (h_tilde * grad.randn(2, 5, generator=grad.Generator(6), dtype="float64")).sum().backward()
            results.append([h_tilde.numpy(), weights.numpy(), B.to_numpy(h.grad), B.to_numpy(memory.grad)]
                           + [B.to_numpy(p.grad) for p in att.parameters()])
        for a, b in zip(*results):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_attention_lookup_gradcheck_across_several_steps(backend):
    """Several steps share one memory: their factored gradients are merged into one product."""
    with B.use(backend):
        gen = grad.Generator(8)
        memory = grad.randn(2, 4, 3, generator=gen, dtype="float64", requires_grad=True)
        qs = [grad.randn(2, 3, generator=gen, dtype="float64", requires_grad=True) for _ in range(3)]
        pad = B.from_numpy(np.array([[False, False, True, True], [False, False, False, False]]))

        def run(memory, *qs):
            return grad.stack([F.attention_lookup(q, memory, pad)[0] for q in qs], dim=1)
        assert grad.gradcheck(run, [memory, *qs])


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_positions_get_exactly_zero_weight_and_gradient(backend):
    with B.use(backend):
        gen = grad.Generator(2)
        att = LuongAttention(4, "general", generator=gen)
        h = grad.randn(2, 4, generator=gen)
        memory = grad.randn(2, 5, 4, generator=gen, requires_grad=True)
        pad = np.array([[False, False, False, True, True], [False, True, True, True, True]])
        h_tilde, weights = att(h, memory, B.from_numpy(pad))
        w = weights.numpy()
        assert np.all(w[pad] == 0.0)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
        (h_tilde * grad.randn(2, 4, generator=gen)).sum().backward()
        g = B.to_numpy(memory.grad)
        assert np.all(g[pad] == 0.0)
        assert np.all(np.abs(g[~pad]).sum(axis=-1) > 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sharp_query_returns_value_of_best_matching_key(backend):
    """Attention as a soft dictionary lookup: with a sharp query the weights become one-hot on
    the most similar key and the context is that key's value."""
    with B.use(backend):
        keys = np.eye(4, dtype=np.float64)[None] * 1.0                        # (1, 4, 4) one-hot keys
        memory = Tensor(B.from_numpy(keys))
        att = LuongAttention(4, "dot").double()
        for target in range(4):
            query = np.zeros((1, 4))
            query[0, target] = 50.0                                         # very sharp
            _, weights = att(Tensor(B.from_numpy(query)), memory)
            w = weights.numpy()[0]
            assert w.argmax() == target and w[target] > 1 - 1e-12
            context = w @ keys[0]
            np.testing.assert_allclose(context, keys[0, target], atol=1e-12)


# ----------------------------------------------------------------------------- teacher forcing
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feeding", [True, False])
def test_training_path_equals_step_by_step_inference_path_fed_the_reference(backend, feeding):
    """``tf_ratio=1.0`` (the batched training path, with the split input weight and one
    generator GEMM) gives the same log-probabilities as the inference path's ``Decoder.step``
    fed the reference tokens one at a time: two independent implementations of one model."""
    with B.use(backend):
        model = tiny(input_feeding=feeding).eval()
        log_probs = model(SRC, SRC_LEN, TGT_IN, tf_ratio=1.0).numpy()        # (B, T, V)
        with no_grad():
            memory, pad_mask, states = model.encode(SRC, SRC_LEN)
            w = model.decoder.weights()
            feed = Tensor(B.zeros((3, 8), like=memory.data))
            steps = []
            for t in range(TGT_IN.shape[1]):
                lp, feed, _ = model.decoder.step(Tensor(B.from_numpy(TGT_IN[:, t])), feed, states,
                                                 memory, pad_mask, w)
                steps.append(lp.numpy())
        np.testing.assert_allclose(log_probs, np.stack(steps, axis=1), rtol=1e-10, atol=1e-12)


def test_tf_ratio_one_is_exactly_plain_teacher_forcing_and_below_one_differs():
    model = tiny()
    base = model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT).item()
    same = model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT, tf_ratio=1.0, generator=grad.Generator(5)).item()
    assert base == same
    mixed = model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT, tf_ratio=0.0, generator=grad.Generator(5)).item()
    assert mixed != base
    # tf_ratio=0 feeds the model's own argmax at every step t >= 1, still differentiable in the weights
    assert grad.gradcheck(lambda: model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT, tf_ratio=0.0,
                                             generator=grad.Generator(5)), [],
                          params=list(model.parameters()), max_coordinates=32)


def test_source_padding_does_not_change_the_output():
    model = tiny()
    alone = model(SRC[1:2, :3], SRC_LEN[1:2], TGT_IN[1:2, :2]).numpy()
    padded = model(SRC, SRC_LEN, TGT_IN).numpy()[1:2, :2]
    np.testing.assert_allclose(alone, padded, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- search
@pytest.mark.parametrize("backend", BACKENDS)
def test_beam_size_one_equals_greedy(backend):
    with B.use(backend):
        model = tiny(seed=3)
        g = model.greedy(SRC, SRC_LEN, max_len=7)
        b = model.beam_search(SRC, SRC_LEN, beam_size=1, max_len=7)
        length = g.tokens.shape[1]
        np.testing.assert_array_equal(b.tokens[:, 0, :length], g.tokens)
        assert np.all(b.tokens[:, 0, length:] == 0)
        np.testing.assert_allclose(b.scores[:, 0], g.scores, rtol=1e-9)


def _sequence_logprob(model, src, src_len, seq):
    """log P(seq | src) by teacher forcing, PAD and BOS excluded as in the search."""
    tgt_in = np.array([[1] + seq[:-1]])
    lp = model(src, src_len, tgt_in).numpy()[0]                              # (T, V)
    return float(sum(lp[t, tok] for t, tok in enumerate(seq)))


def test_beam_search_with_a_large_beam_finds_the_exhaustive_optimum():
    model = tiny(vocab=(12, 6), seed=7)                                       # outputs: EOS, UNK, 4, 5
    src, src_len = SRC[:1], SRC_LEN[:1]
    max_len = 4
    tokens = [2, 3, 4, 5]
    # Every finished hypothesis: up to max_len - 1 tokens from {UNK, 4, 5}, then EOS.
    best_score, best_seq = -math.inf, None
    for n in range(1, max_len + 1):
        for body in itertools.product([3, 4, 5], repeat=n - 1):
            seq = list(body) + [2]
            s = _sequence_logprob(model, src, src_len, seq)
            if s > best_score:
                best_score, best_seq = s, seq
    out = model.beam_search(src, src_len, beam_size=len(tokens) ** max_len, max_len=max_len)
    found = [t for t in out.tokens[0, 0].tolist() if t != 0]
    assert found == best_seq
    assert out.scores[0, 0] == pytest.approx(best_score, rel=1e-9)


def test_length_penalty_direction_favours_longer_outputs_as_alpha_grows():
    short, long_ = -2.0, -2.6                                                # log-probs, lengths 2 and 8
    assert short / length_penalty(2, 0.0) > long_ / length_penalty(8, 0.0)
    assert short / length_penalty(2, 2.0) < long_ / length_penalty(8, 2.0)
    model = tiny(seed=11)
    lengths = []
    for alpha in (0.0, 5.0):
        out = model.beam_search(SRC, SRC_LEN, beam_size=4, length_penalty=alpha, max_len=12)
        lengths.append(int((out.tokens[:, 0] != 0).sum()))
    assert lengths[1] >= lengths[0]


def test_beam_search_n_best_sorted_and_checked():
    model = tiny(seed=4)
    out = model.beam_search(SRC, SRC_LEN, beam_size=4, n_best=3, max_len=6)
    assert out.tokens.shape[:2] == (3, 3) and out.scores.shape == (3, 3)
    assert np.all(np.diff(out.scores, axis=1) <= 0)
    with pytest.raises(ValueError, match="n_best"):
        model.beam_search(SRC, SRC_LEN, beam_size=2, n_best=3)


def test_greedy_pads_after_eos_and_never_emits_pad_or_bos():
    model = tiny(seed=5)
    out = model.greedy(SRC, SRC_LEN, max_len=10)
    for row in out.tokens:
        row = row.tolist()
        assert 1 not in row
        if 2 in row:
            end = row.index(2)
            assert all(t == 0 for t in row[end + 1:])
            assert 0 not in row[:end]
