"""The LSTM language model: gradients, scoring, generation, on every backend."""
import math

import numpy as np
import pytest

import grad
from grad import backend as B
from minis2s.lm.lstm_lm import LSTMLanguageModel, pad_batch

from helpers import BACKENDS

SENTS = [[4, 5, 6], [7, 4], [5, 5, 5, 6]]


def model(tie=False, seed=0, dtype="float64"):
    return LSTMLanguageModel(9, emb_size=6, hidden_size=6, num_layers=2, dropout=0.0,
                             tie_weights=tie, generator=grad.Generator(seed)).to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tie", [False, True])
def test_lm_loss_gradcheck(backend, tie):
    with B.use(backend):
        lm = model(tie)
        ids, lengths = pad_batch([[1] + s + [2] for s in SENTS])
        assert grad.gradcheck(lambda: lm.loss(ids[:, :-1], ids[:, 1:], lengths - 1), [],
                              params=list(lm.parameters()), max_coordinates=24)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_runs_unmasked_with_the_loss_and_gradients_of_the_masked_run(backend):
    """``loss`` skips the LSTM's per-step length masks: the same loss and the same gradient of
    every parameter as the masked forward ``lm(x_in, lengths)``, on rows of different lengths."""
    from minis2s.lm.lstm_lm import token_cross_entropy
    with B.use(backend):
        lm = model()
        ids, lengths = pad_batch([[1] + s + [2] for s in SENTS])
        params = list(lm.parameters())

        def run(masked):
            for p in params:
                p.grad = None
            if masked:
                logits, _ = lm(ids[:, :-1], lengths - 1)
                loss = token_cross_entropy(logits, ids[:, 1:], lm.pad_idx, "sum")
            else:
                loss = lm.loss(ids[:, :-1], ids[:, 1:], lengths - 1, reduction="sum")
            loss.backward()
            return loss.item(), [B.to_numpy(p.grad).copy() for p in params]

        (masked_loss, masked_grads), (loss, grads) = run(True), run(False)
        assert loss == pytest.approx(masked_loss, rel=1e-12, abs=0)
        assert len(grads) == len(params) > 0
        for g, m in zip(grads, masked_grads):
            np.testing.assert_allclose(g, m, rtol=1e-11, atol=1e-14)
        # the padded rows' unmasked outputs do differ: the equality above is the loss ignoring them
        full, _ = lm(ids[:, :-1])
        masked, _ = lm(ids[:, :-1], lengths - 1)
        assert not np.allclose(B.to_numpy(full.data)[1, -1], B.to_numpy(masked.data)[1, -1])


def test_tied_weights_are_one_parameter():
    lm = model(tie=True)
    assert lm.output_layer.weight is lm.embedding.weight
    names = [n for n, _ in lm.named_parameters()]
    assert "output_layer.weight" not in names and "embedding.weight" in names


@pytest.mark.parametrize("backend", BACKENDS)
def test_score_equals_the_sum_of_teacher_forced_log_probabilities(backend):
    with B.use(backend):
        lm = model()
        scores = lm.score(SENTS)
        ids, lengths = pad_batch([[1] + s + [2] for s in SENTS])
        total = lm.loss(ids[:, :-1], ids[:, 1:], lengths - 1, reduction="sum").item()
        assert sum(s for s, _ in scores) == pytest.approx(-total, rel=1e-10)
        assert [n for _, n in scores] == [len(s) + 1 for s in SENTS]     # EOS counted, BOS not
        # Padding does not change a sentence's score.
        alone = lm.score([SENTS[1]])[0][0]
        assert alone == pytest.approx(scores[1][0], rel=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_greedy_is_deterministic_and_sampling_follows_the_generator(backend):
    with B.use(backend):
        lm = model(dtype="float32")
        g1 = lm.generate(3, max_len=6, greedy=True)
        g2 = lm.generate(3, max_len=6, greedy=True)
        assert g1 == g2 and all(s == g1[0] for s in g1)
        s1 = lm.generate(4, max_len=6, generator=grad.Generator(1))
        s2 = lm.generate(4, max_len=6, generator=grad.Generator(1))
        assert s1 == s2
        for sent in s1:
            assert all(3 <= t < 9 for t in sent) and len(sent) <= 6      # never PAD, BOS or EOS
        topk1 = lm.generate(20, max_len=3, top_k=1, generator=grad.Generator(2))
        assert all(s == g1[0][:len(s)] for s in topk1)                   # top-1 sampling is greedy
        prompted = lm.generate(2, max_len=3, greedy=True, prompt=[5, 6])
        assert all(s[:2] == [5, 6] for s in prompted)


def test_temperature_sharpens_and_flattens():
    lm = model(dtype="float32")
    cold = lm.generate(200, max_len=1, temperature=0.05, generator=grad.Generator(3))
    hot = lm.generate(200, max_len=1, temperature=50.0, generator=grad.Generator(3))
    distinct = lambda outs: len({tuple(o) for o in outs})
    assert distinct(cold) < distinct(hot)
    with pytest.raises(ValueError, match="temperature"):
        lm.generate(1, temperature=0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_empty_sentence_is_one_predicted_eos(backend):
    """``[BOS] -> [EOS]``: one predicted token, alone or padded in a batch, in score and loss."""
    with B.use(backend):
        lm = model()
        logits, _ = lm(np.array([[1]], dtype=np.int64))
        logp_eos = float(B.to_numpy(grad.functional.log_softmax(logits, dim=-1).data)[0, 0, 2])
        scores = lm.score([[], SENTS[0], []])
        assert [n for _, n in scores] == [1, len(SENTS[0]) + 1, 1]
        assert scores[0][0] == pytest.approx(logp_eos, rel=1e-10) and scores[2] == scores[0]
        ids, lengths = pad_batch([[1, 2], [1] + SENTS[0] + [2]])
        total = lm.loss(ids[:, :-1], ids[:, 1:], lengths - 1, reduction="sum").item()
        assert -total == pytest.approx(scores[0][0] + scores[1][0], rel=1e-10)
        ids, lengths = pad_batch([[1, 2], [1, 2]])                        # a batch of only empties
        assert grad.gradcheck(lambda: lm.loss(ids[:, :-1], ids[:, 1:], lengths - 1), [],
                              params=list(lm.parameters()), max_coordinates=12)
