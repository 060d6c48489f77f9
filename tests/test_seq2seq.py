"""The seq2seq model: attention, teacher forcing, input feeding, greedy and beam search."""
import functools
import itertools

import numpy as np
import pytest

import grad
from grad import backend as B
from grad import functional as F
from grad.tensor import Tensor, no_grad
from minis2s.models import LuongAttention, Seq2Seq
from minis2s.search import length_penalty

from helpers import BACKENDS, backends

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


# ----------------------------------------------------------------------------- the whole model by hand
# An independent float64 implementation of the model from its own weights, in plain NumPy, one
# sentence at a time without padding: the bidirectional encoder, the decoder initialised from
# its final states, input feeding written as a concatenation [emb(y_{t-1}); h~_{t-1}] with the
# unsplit layer-0 input weight, "general" attention over the unpadded source, the generator and
# the per-token NLL. The model splits W_ih, fuses the LSTM step and the attention lookup and runs
# the whole batch at once; both must give the same numbers.
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _cell(x, h, c, p, name):
    """One LSTM step with torch's gate order i, f, g, o."""
    z = p[f"weight_ih_{name}"] @ x + p[f"bias_ih_{name}"] + p[f"weight_hh_{name}"] @ h + p[f"bias_hh_{name}"]
    i, f, g, o = np.split(z, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def _reference_token_nll(model, src, src_len, tgt_in, tgt_out):
    """``-log P(y_t | y_<t, x)`` of every non-PAD target token, row by row, as a list."""
    cfg = model.config
    p = {k: B.to_numpy(v).astype(np.float64) for k, v in model.state_dict().items()}
    enc = {k[len("encoder.rnn."):]: v for k, v in p.items() if k.startswith("encoder.rnn.")}
    dec = {k[len("decoder.rnn."):]: v for k, v in p.items() if k.startswith("decoder.rnn.")}
    n_layers, half = cfg["num_layers"], cfg["hidden_size"] // 2
    out = []
    for b in range(len(src)):
        x = p["encoder.embedding.weight"][src[b, :src_len[b]]]                # (S, E) unpadded
        n = len(x)
        init = []
        for k in range(n_layers):
            outputs, finals = [], []
            for suffix, steps in (("", range(n)), ("_reverse", range(n - 1, -1, -1))):
                h, c, seq = np.zeros(half), np.zeros(half), [None] * n
                for t in steps:
                    h, c = _cell(x[t], h, c, enc, f"l{k}{suffix}")
                    seq[t] = h
                outputs.append(np.stack(seq))
                finals.append((h, c))
            x = np.concatenate(outputs, axis=1)                               # (S, H)
            init.append([np.concatenate([finals[0][0], finals[1][0]]),
                         np.concatenate([finals[0][1], finals[1][1]])])
        memory, states = x, init
        feed = np.zeros(cfg["hidden_size"])                                   # h~_0 = 0
        for t in range(int((tgt_out[b] != 0).sum())):
            inp = p["decoder.embedding.weight"][tgt_in[b, t]]
            if cfg["input_feeding"]:
                inp = np.concatenate([inp, feed])                             # [emb; h~_{t-1}]
            for k in range(n_layers):
                states[k] = list(_cell(inp, *states[k], dec, f"l{k}"))
                inp = states[k][0]
            h = inp
            scores = memory @ (p["decoder.attention.query.weight"] @ h)       # (S,)
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            h_tilde = np.tanh(p["decoder.attention.combine.weight"] @ np.concatenate([h, weights @ memory]))
            logits = p["decoder.output_layer.weight"] @ h_tilde + p["decoder.output_layer.bias"]
            top = logits.max()
            out.append(top + np.log(np.exp(logits - top).sum()) - logits[tgt_out[b, t]])
            feed = h_tilde
    return out


@pytest.mark.parametrize("feeding", [True, False])
def test_loss_equals_a_hand_written_float64_model_with_and_without_input_feeding(feeding):
    model = tiny(input_feeding=feeding)
    expected = _reference_token_nll(model, SRC, SRC_LEN, TGT_IN, TGT_OUT)
    assert len(expected) == int((TGT_OUT != 0).sum()) == 9
    log_probs = model(SRC, SRC_LEN, TGT_IN).numpy()                          # (B, T, V)
    picked = np.take_along_axis(log_probs, TGT_OUT[:, :, None], axis=2)[:, :, 0]
    np.testing.assert_allclose(-picked[TGT_OUT != 0], expected, rtol=1e-10, atol=1e-12)
    loss = model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT).item()
    assert loss == pytest.approx(np.mean(expected), rel=1e-10)


def test_input_feeding_feeds_the_previous_attentional_vector():
    """The feed half of layer 0's input weight gets a gradient, and a model without input
    feeding but otherwise the same weights (the embedding half of ``W_ih``) gives another loss."""
    model = tiny()
    model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT).backward()
    emb = model.config["emb_size"]
    w_grad = B.to_numpy(model.decoder.rnn.weight_ih_l0.grad)                # (4H, E + H)
    feed_norm, emb_norm = np.linalg.norm(w_grad[:, emb:]), np.linalg.norm(w_grad[:, :emb])
    assert feed_norm > 0.05 * emb_norm > 0, (feed_norm, emb_norm)           # about 0.17 here
    plain = tiny(input_feeding=False)
    weights = {k: B.to_numpy(v) for k, v in model.state_dict().items()}
    weights["decoder.rnn.weight_ih_l0"] = weights["decoder.rnn.weight_ih_l0"][:, :emb]
    plain.load_state_dict(weights)
    fed = model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT).item()
    not_fed = plain.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT).item()
    assert abs(fed - not_fed) > 1e-4, (fed, not_fed)


# ----------------------------------------------------------------------------- gradients
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
        # Both paths return the weights for inspection only; h~ carries the gradient.
        with grad.reference_mode():                                   # the composed path
            assert grad.gradcheck(lambda h, m: att(h, m, mask)[0], [h, memory], params=params)
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
            with grad.reference_mode(not fused):
                h_tilde, weights = att(h, memory, pad)
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


def _lookup_case(n_queries=8, n_keys=4, d_key=4, d_value=3):
    """Memory rows ``[key | value]`` with distinct keys (orthonormal) and values (random), noisy
    queries in key space (near one key, half as near another), a PAD mask that hides the best
    key of every other query, and the expected answer: the row of the most similar unmasked key
    (computed here, not assumed)."""
    rng = np.random.default_rng(0)
    keys = np.linalg.qr(rng.normal(size=(d_key, d_key)))[0][:n_keys]         # (S, Dk)
    values = rng.uniform(-1.0, 1.0, size=(n_keys, d_value))                  # (S, Dv)
    rows = np.concatenate([keys, values], axis=1)                            # (S, H)
    first = np.arange(n_queries) % n_keys
    second = (first + 1 + np.arange(n_queries) // n_keys) % n_keys              # never first
    queries = (keys[first] + 0.5 * keys[second]
               + 0.05 * rng.normal(size=(n_queries, d_key)))                 # (N, Dk) near a key
    sims = queries @ keys.T                                                  # (N, S)
    pad = np.zeros((n_queries, n_keys), dtype=bool)
    odd = np.arange(1, n_queries, 2)
    pad[odd, sims[odd].argmax(axis=1)] = True                                # hide the best key
    sims = np.where(pad, -np.inf, sims)
    best = sims.argmax(axis=1)                                               # (N,)
    gap = np.sort(sims, axis=1)[:, -1] - np.sort(sims, axis=1)[:, -2]
    assert gap.min() > 0.05 and len(set(best.tolist())) > 1                  # clear, varied winners
    memory = np.broadcast_to(rows, (n_queries,) + rows.shape).copy()         # (N, S, H)
    return queries, memory, pad, rows[best], d_key


@backends
@pytest.mark.parametrize("kind", ["general", "dot"])
def test_sharp_query_returns_value_of_best_matching_key(backend, kind):
    """Attention as a soft dictionary lookup, with keys distinct from values: each memory row is
    ``[key | value]``; the query reads only the key half (a known ``W_a = beta [I 0; 0 0]`` for
    "general", a query ``beta [q; 0]`` for "dot"), so with a sharp ``beta`` the weights are
    one-hot on the most similar unmasked key and the context is that key's whole row, its value
    included. ``W_c = [0 | I/2]`` makes ``h~ = tanh(context / 2)``, so the context is read back
    from ``LuongAttention``'s own output, on the fused and on the composed path."""
    beta = 500.0                                                             # very sharp
    queries, memory, pad, expected, d_key = _lookup_case()
    n, n_keys, hidden = memory.shape
    with B.use(backend):
        att = LuongAttention(hidden, kind, generator=grad.Generator(0)).double()
        h = np.zeros((n, hidden))
        if kind == "general":
            w_a = np.zeros((hidden, hidden))
            w_a[:d_key, :d_key] = beta * np.eye(d_key)
            att.query.weight.data = B.from_numpy(w_a)
            h[:, :d_key] = queries
            h[:, d_key:] = 7.0                                               # W_a ignores this half
        else:
            h[:, :d_key] = beta * queries
        w_c = np.zeros((hidden, 2 * hidden))
        w_c[:, hidden:] = 0.5 * np.eye(hidden)
        att.combine.weight.data = B.from_numpy(w_c)
        mem, mask = Tensor(B.from_numpy(memory)), B.from_numpy(pad)
        for fused in (True, False):
            with grad.reference_mode(not fused):
                h_tilde, weights = att(Tensor(B.from_numpy(h)), mem, mask)
            w = weights.numpy()                                              # (N, S)
            np.testing.assert_allclose(w, np.eye(n_keys)[np.argmax(w, axis=1)], atol=1e-12)
            context = 2.0 * np.arctanh(h_tilde.numpy())                      # (N, H)
            np.testing.assert_allclose(context, expected, atol=1e-10)
            np.testing.assert_allclose(context[:, d_key:], expected[:, d_key:], atol=1e-10)
        # The fused op itself returns the context directly.
        q = np.zeros((n, hidden))
        q[:, :d_key] = beta * queries
        context, weights = F.attention_lookup(Tensor(B.from_numpy(q)), mem, mask)
        np.testing.assert_allclose(context.numpy(), expected, atol=1e-12)
        assert np.all(weights.numpy()[pad] == 0.0)


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


@backends
def test_tf_ratio_one_is_exactly_plain_teacher_forcing_and_below_one_differs(backend):
    with B.use(backend):
        model = tiny()
        base = model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT).item()
        same = model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT, tf_ratio=1.0, generator=grad.Generator(5)).item()
        assert base == same
        mixed = model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT, tf_ratio=0.0, generator=grad.Generator(5)).item()
        assert mixed != base


@backends
def test_tf_ratio_zero_feeds_the_models_own_argmax_as_greedy_does(backend):
    """With ``tf_ratio=0`` (eval mode, no dropout) every step after the first feeds the model's
    own previous argmax over the tokens other than PAD and BOS, whatever the reference says: the
    per-step argmax of the returned log-probabilities is greedy decoding's output, up to and
    including its EOS. Also when PAD and BOS are made the most probable tokens (they must not be
    fed). Under full teacher forcing the same reference gives other tokens, so the agreement is
    not a coincidence."""
    with B.use(backend):
        for model in (trained().eval(), _boost_pad_bos(trained()).eval()):
            out = model.greedy(SRC, SRC_LEN, max_len=8)
            ends = [row.tolist().index(2) + 1 for row in out.tokens]         # EOS position + 1
            assert max(ends) > 3
            reference = np.array([[1] + [3] * (out.tokens.shape[1] - 1)] * 3)  # BOS, UNK, UNK, ...
            own = _argmax_without_pad_bos(model(SRC, SRC_LEN, reference, tf_ratio=0.0,
                                                generator=grad.Generator(0)).numpy())
            for s, end in enumerate(ends):
                np.testing.assert_array_equal(own[s, :end], out.tokens[s, :end])
            forced = _argmax_without_pad_bos(model(SRC, SRC_LEN, reference).numpy())
            assert any(not np.array_equal(forced[s, :end], out.tokens[s, :end])
                       for s, end in enumerate(ends))


def _argmax_without_pad_bos(log_probs):
    """``(B, T, V)`` -> ``(B, T)``: the most probable token other than PAD (0) and BOS (1)."""
    return np.argmax(np.where(np.arange(log_probs.shape[-1]) < 2, -np.inf, log_probs), axis=-1)


@backends
def test_source_padding_does_not_change_the_output(backend):
    with B.use(backend):
        model = tiny()
        alone = model(SRC[1:2, :3], SRC_LEN[1:2], TGT_IN[1:2, :2]).numpy()
        padded = model(SRC, SRC_LEN, TGT_IN).numpy()[1:2, :2]
        np.testing.assert_allclose(alone, padded, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- search
# An untrained model gives every token about the same probability at every step, so its best
# output is just EOS: searches on it are one step long and tell little. The search tests use a
# tiny model (target tokens EOS, UNK, 4, 5) trained for a few Adam steps on SRC with these
# targets, so that its outputs are several steps long and differ per sentence:
#   sentence 0, a greedy trap: 4 is the likeliest first token, but it is followed by three
#     different continuations; "5 5 5 EOS" is the likeliest whole sequence;
#   sentence 1, a short and a long answer: "4 EOS" (three times), "5 5 5 5 5 EOS" (twice);
#   sentence 2, one long answer (6 tokens with EOS).
TRAIN_PAIRS = ([(0, [4, 3, 5, 2]), (0, [4, 5, 3, 2]), (0, [4, 3, 3, 2]), (0, [5, 5, 5, 2]),
                (0, [5, 5, 5, 2])]
               + [(1, [4, 2])] * 3 + [(1, [5, 5, 5, 5, 5, 2])] * 2
               + [(2, [3, 4, 5, 4, 3, 2])] * 2)


def _teacher_batch(rows, seqs):
    """Source rows and target sequences (ending in EOS) -> src, lengths, tgt_in, tgt_out."""
    tgt_in = np.zeros((len(seqs), max(len(q) for q in seqs)), dtype=np.int64)
    tgt_out = np.zeros_like(tgt_in)
    for i, q in enumerate(seqs):
        tgt_in[i, :len(q)] = [1] + q[:-1]
        tgt_out[i, :len(q)] = q
    return SRC[rows], SRC_LEN[rows], tgt_in, tgt_out


@functools.lru_cache(maxsize=None)
def _trained_weights():
    """Trained once per process, on NumPy; every backend loads the same host weights."""
    with B.use("numpy"):
        model = tiny(vocab=(12, 6))
        opt = grad.optim.Adam(list(model.parameters()), lr=0.05)
        batch = _teacher_batch([r for r, _ in TRAIN_PAIRS], [q for _, q in TRAIN_PAIRS])
        for _ in range(60):
            opt.zero_grad()
            model.loss(*batch).backward()
            opt.step()
        return {k: B.to_numpy(v).copy() for k, v in model.state_dict().items()}


def trained():
    model = tiny(vocab=(12, 6))
    model.load_state_dict(_trained_weights())
    return model


def _boost_pad_bos(model):
    """The model with PAD and BOS made the most probable tokens at every step (output bias +20)."""
    bias = B.to_numpy(model.decoder.output_layer.bias.data).copy()
    bias[[0, 1]] += 20.0
    model.decoder.output_layer.bias.data = B.from_numpy(bias)
    return model


def _log_probs(model, rows, seqs):
    """``log P(seq | SRC[row])`` for many (row, sequence) pairs in one teacher-forced batch."""
    src, src_len, tgt_in, tgt_out = _teacher_batch(rows, seqs)
    lp = model(src, src_len, tgt_in).numpy()                                 # (N, T, V)
    picked = np.take_along_axis(lp, tgt_out[:, :, None], axis=2)[:, :, 0]    # (N, T)
    return np.where(tgt_out != 0, picked, 0.0).sum(axis=1)                   # (N,)


def _exhaustive(model, max_len):
    """Every finished hypothesis up to ``max_len`` tokens (up to ``max_len - 1`` of UNK, 4, 5,
    then EOS) and its log P for each sentence of SRC: ``(seqs, log_p (3, n_seqs), lengths)``."""
    seqs = [list(body) + [2] for n in range(max_len)
            for body in itertools.product([3, 4, 5], repeat=n)]
    rows = np.repeat(np.arange(len(SRC)), len(seqs))
    log_p = _log_probs(model, rows, seqs * len(SRC)).reshape(len(SRC), len(seqs))
    return seqs, log_p, np.array([len(q) for q in seqs])


def _hypothesis(tokens):
    """One row of a search's tokens, PAD stripped."""
    return [t for t in tokens.tolist() if t != 0]


@backends
def test_beam_size_one_equals_greedy(backend):
    """Tokens, scores and attention, over several steps; at ``max_len=4`` sentence 2 runs out of
    steps before its EOS (beam search's flush of unfinished hypotheses)."""
    with B.use(backend):
        model = trained()
        for max_len in (8, 4):
            g = model.greedy(SRC, SRC_LEN, max_len=max_len)
            b = model.beam_search(SRC, SRC_LEN, beam_size=1, max_len=max_len)
            lengths = (g.tokens != 0).sum(axis=1)
            assert lengths.max() > 3 and len(set(lengths.tolist())) > 1
            if max_len == 4:
                assert not np.all((g.tokens == 2).any(axis=1))               # one ran out of steps
            np.testing.assert_array_equal(b.tokens[:, 0], g.tokens)
            np.testing.assert_allclose(b.scores[:, 0], g.scores, rtol=1e-9)
            np.testing.assert_allclose(b.attention[:, 0], g.attention, rtol=1e-9, atol=1e-12)


@backends
def test_beam_search_with_a_large_beam_finds_the_exhaustive_optimum(backend):
    """With more beams than prefixes nothing is ever pruned, so beam search is exact: its best
    three hypotheses (``length_penalty=0``) are the three highest-scoring sequences found by
    enumerating all of them. The optima are several tokens long, and greedy misses sentence 0's."""
    with B.use(backend):
        model = trained()
        max_len = 6
        seqs, log_p, _ = _exhaustive(model, max_len)                        # 364 sequences
        out = model.beam_search(SRC, SRC_LEN, beam_size=3 ** (max_len - 1), n_best=3,
                                max_len=max_len)
        greedy = model.greedy(SRC, SRC_LEN, max_len=max_len)
        for s in range(len(SRC)):
            order = np.argsort(-log_p[s], kind="stable")
            assert log_p[s, order[2]] - log_p[s, order[3]] > 1e-6            # no tie for 3rd place
            for j in range(3):
                assert _hypothesis(out.tokens[s, j]) == seqs[order[j]]
                assert out.scores[s, j] == pytest.approx(log_p[s, order[j]], rel=1e-9)
        best = [seqs[np.argmax(log_p[s])] for s in range(len(SRC))]
        assert len(best[0]) >= 3 and len(best[1]) >= 2 and len(best[2]) >= 3
        assert _hypothesis(greedy.tokens[0]) != best[0]


def gnmt_penalty(length, alpha):
    """GNMT's length penalty written out here (Wu et al. 2016): ``((5 + |Y|) / 6) ** alpha``;
    the tests score hypotheses with it rather than with the code under test."""
    return ((5.0 + length) / 6.0) ** alpha


def test_length_penalty_values_by_hand():
    assert length_penalty(7, alpha=1.0) == 2.0                              # (5 + 7) / 6
    assert length_penalty(7, alpha=0.6) == pytest.approx(1.5157165665103982, rel=1e-12)  # 2 ** 0.6
    assert length_penalty(1, alpha=0.6) == 1.0                              # (5 + 1) / 6 = 1
    assert length_penalty(4, alpha=0.0) == 1.0
    np.testing.assert_allclose(length_penalty(np.array([1, 7, 19]), 0.5), [1.0, 2 ** 0.5, 2.0],
                               rtol=1e-12)                                   # 24 / 6 = 4


@backends
def test_length_penalty_direction_favours_longer_outputs_as_alpha_grows(backend):
    short, long_ = -2.0, -2.6                                                # log-probs, lengths 2 and 8
    assert short / gnmt_penalty(2, 0.0) > long_ / gnmt_penalty(8, 0.0)
    assert short / gnmt_penalty(2, 2.0) < long_ / gnmt_penalty(8, 2.0)
    with B.use(backend):
        model = trained()
        max_len = 6
        seqs, log_p, lengths = _exhaustive(model, max_len)
        chosen = []
        for alpha in (0.0, 1.0, 3.0):
            out = model.beam_search(SRC, SRC_LEN, beam_size=4, length_penalty=alpha,
                                    max_len=max_len)
            score = log_p / gnmt_penalty(lengths, alpha)                     # (3, n_seqs) GNMT
            for s in range(len(SRC)):
                assert _hypothesis(out.tokens[s, 0]) == seqs[np.argmax(score[s])]
                assert out.scores[s, 0] == pytest.approx(score[s].max(), rel=1e-9)
            chosen.append((out.tokens[:, 0] != 0).sum(axis=1))
        chosen = np.array(chosen)                                            # (alphas, B)
        assert np.all(np.diff(chosen, axis=0) >= 0)                          # never shorter
        # Sentence 1: "4 EOS" without a penalty, "5 5 5 5 5 EOS" with alpha = 3.
        assert chosen[0, 1] == 2 and chosen[-1, 1] == 6


def test_negative_length_penalty_is_rejected():
    model = tiny()
    with pytest.raises(ValueError, match="length_penalty.*>= 0"):
        model.beam_search(SRC, SRC_LEN, beam_size=2, length_penalty=-0.5)


@backends
def test_beam_search_n_best_sorted_and_checked(backend):
    """The n-best list: best first, distinct hypotheses ending in EOS, each scored by its own
    teacher-forced log P divided by the GNMT penalty of its length."""
    with B.use(backend):
        model = trained()
        alpha = 0.6
        out = model.beam_search(SRC, SRC_LEN, beam_size=4, n_best=3, length_penalty=alpha,
                                max_len=8)
        assert out.tokens.shape[:2] == (3, 3) and out.scores.shape == (3, 3)
        assert out.attention.shape == out.tokens.shape + (SRC.shape[1],)
        assert np.all(np.diff(out.scores, axis=1) <= 0)
        hyps = [_hypothesis(out.tokens[s, j]) for s in range(3) for j in range(3)]
        assert all(h[-1] == 2 and 2 not in h[:-1] for h in hyps)
        for s in range(3):
            assert len({tuple(h) for h in hyps[3 * s:3 * s + 3]}) == 3
        rescored = _log_probs(model, np.repeat(np.arange(3), 3), hyps)
        rescored /= gnmt_penalty(np.array([len(h) for h in hyps]), alpha)
        np.testing.assert_allclose(out.scores.reshape(-1), rescored, rtol=1e-9)
        with pytest.raises(ValueError, match="n_best"):
            model.beam_search(SRC, SRC_LEN, beam_size=2, n_best=3)


@backends
def test_greedy_pads_after_eos_and_never_emits_pad_or_bos(backend):
    """PAD and BOS, made the most probable tokens by a large output bias, are still never chosen
    (by greedy or beam search); greedy's choice among the other tokens is unchanged, so its
    tokens equal the unbiased model's. Sequences end at different steps, PAD after their EOS."""
    with B.use(backend):
        plain = trained().greedy(SRC, SRC_LEN, max_len=10)
        model = _boost_pad_bos(trained())
        greedy = model.greedy(SRC, SRC_LEN, max_len=10)
        np.testing.assert_array_equal(greedy.tokens, plain.tokens)
        beam = model.beam_search(SRC, SRC_LEN, beam_size=3, n_best=3, max_len=10)
        ends = []
        for row in list(plain.tokens) + list(beam.tokens.reshape(-1, beam.tokens.shape[2])):
            row = row.tolist()
            assert 1 not in row and 2 in row
            end = row.index(2)
            assert all(t == 0 for t in row[end + 1:])
            assert 0 not in row[:end]
            ends.append(end)
        assert len(set(ends[:3])) == 3                                       # 3 different ends


def _searches(model):
    """Greedy (max_len 8 and 3: some sentences end, some run out of steps) and beam search
    (beam 3, 2 best, with a length penalty) on the padded SRC."""
    return [model.greedy(SRC, SRC_LEN, max_len=8), model.greedy(SRC, SRC_LEN, max_len=3),
            model.beam_search(SRC, SRC_LEN, beam_size=3, n_best=2, length_penalty=0.6, max_len=8)]


@backends
@pytest.mark.parametrize("case", ["trained", "trained-pad-bos-boosted", "dot-no-feeding-1-layer",
                                  "no-attention"])
def test_inference_step_gives_the_tokens_and_scores_of_its_reference(backend, case):
    """Search runs ``decoder_step`` (raw arrays, each layer's gates one product with stacked and
    halved weights, no graph) and the packed ``encoder_lstm`` under ``no_grad`` (and beam search
    the partitioning ``topk``); with these swapped for their references (what training runs, a
    full sort) greedy and beam search give the same
    tokens, the same scores and
    attention (1e-10, float64), on padded sources, with and without attention and input
    feeding, and when PAD and BOS are the most probable tokens. The fast step really ran: its
    laid-out weights are in the search state, and not under the swap."""
    with B.use(backend):
        model = {"trained": trained, "trained-pad-bos-boosted": lambda: _boost_pad_bos(trained()),
                 "dot-no-feeding-1-layer": lambda: tiny("dot", False, layers=1, seed=3),
                 "no-attention": lambda: tiny(None, True, seed=4)}[case]().eval()
        fast = _searches(model)
        with grad.reference_mode(only={"decoder_step", "encoder_lstm", "topk"}):
            reference = _searches(model)
        if case.startswith("trained"):
            assert (fast[0].tokens != 0).sum(axis=1).max() > 3        # several steps long
        for f, r in zip(fast, reference):
            np.testing.assert_array_equal(f.tokens, r.tokens)
            np.testing.assert_allclose(f.scores, r.scores, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(f.attention, r.attention, rtol=1e-10, atol=1e-12)
        for mode, laid_out in ((grad.reference_mode(False), True),
                               (grad.reference_mode(only={"decoder_step"}), False)):
            with no_grad(), mode:
                state = model.init_decoding(SRC, SRC_LEN)
                model.decode_step(Tensor(B.from_numpy(np.ones(3, dtype=np.int64))), state)
            assert ("inference" in state.weights) is laid_out


@backends
@pytest.mark.parametrize("layers,bidirectional", [(2, True), (1, False)])
def test_packed_inference_encoder_equals_the_lstm_it_replaces(backend, layers, bidirectional):
    """``encoder_lstm`` (only the real tokens, rows sorted by length and packed) against
    ``nn.LSTM`` with ``lengths``: the same outputs (0 at padding) and final states, float64, for
    unsorted lengths with ties, a full-length row and an empty one."""
    from minis2s.models.encoder import encoder_lstm
    with B.use(backend):
        rnn = grad.nn.LSTM(3, 4, layers, batch_first=True, bidirectional=bidirectional,
                           generator=grad.Generator(2), dtype="float64")
        rng = np.random.default_rng(1)
        x = Tensor(B.from_numpy(rng.normal(size=(5, 6, 3))))
        lengths = np.array([3, 6, 0, 3, 1])
        with no_grad():
            out, (h, c) = encoder_lstm(rnn, x, B.from_numpy(lengths))
            ref_out, (ref_h, ref_c) = encoder_lstm.reference(rnn, x, B.from_numpy(lengths))
        for a, b in ((out, ref_out), (h, ref_h), (c, ref_c)):
            assert a.shape == b.shape
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
        assert np.abs(ref_out.numpy()[0, 3:]).max() == 0 and np.abs(ref_h.numpy()[:, 1]).min() > 0
        with pytest.raises(ValueError, match="lengths must be in"):
            encoder_lstm(rnn, x, B.from_numpy(np.array([3, 7, 0, 3, 1])))


@backends
def test_inference_step_runs_the_training_step_when_gradients_or_dropout_are_on(backend):
    """With gradients enabled the step builds the graph (the log-probabilities have a backward)
    and with dropout in training mode it draws masks: both are ``decoder_step_reference``."""
    with B.use(backend):
        model = tiny(dtype="float32")
        state = model.init_decoding(SRC, SRC_LEN)
        y = Tensor(B.from_numpy(np.ones(3, dtype=np.int64)))
        log_probs, _, _ = model.decode_step(y, state)
        assert log_probs.requires_grad and "inference" not in state.weights
        model.decoder.dropout = 0.5
        with no_grad():
            a, _, _ = model.decode_step(y, model.init_decoding(SRC, SRC_LEN))
            b, _, _ = model.decode_step(y, model.init_decoding(SRC, SRC_LEN))
        assert not np.allclose(a.numpy(), b.numpy())                   # different dropout masks
        model.eval()
        with no_grad():
            a, state, _ = model.decode_step(y, model.init_decoding(SRC, SRC_LEN))
        assert "inference" in state.weights


# ----------------------------------------------------------------------------- gradients of the whole model
# The slowest tests, last: a run stopped at the first failure (tools/mutants.py) then ends early.
@backends
@pytest.mark.parametrize("attention,feeding", [("general", True), ("general", False), ("dot", True), (None, True)])
def test_seq2seq_loss_gradcheck(backend, attention, feeding):
    """Every parameter of the whole model: sampled coordinates per tensor (48 on NumPy, 2 on the
    slower backends) plus one random direction through all of them at once."""
    with B.use(backend):
        model = tiny(attention, feeding)
        assert grad.gradcheck(lambda: model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT), [],
                              params=list(model.parameters()),
                              max_coordinates=48 if backend == "numpy" else 2)


@backends
def test_loss_with_tf_ratio_zero_is_differentiable_in_the_weights(backend):
    """``tf_ratio=0`` feeds the model's own argmax at every step t >= 1 (no gradient through
    that choice); the loss is still differentiable in every weight."""
    with B.use(backend):
        model = tiny()
        assert grad.gradcheck(lambda: model.loss(SRC, SRC_LEN, TGT_IN, TGT_OUT, tf_ratio=0.0,
                                                 generator=grad.Generator(5)), [],
                              params=list(model.parameters()),
                              max_coordinates=32 if backend == "numpy" else 2)
