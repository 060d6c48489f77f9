"""The exercises and their checkers, in the order of docs/concepts.md.

Every checker computes the expected values with the library (``minis2s.metrics``,
``minis2s.lm.NGramLM``, ``grad.functional``, ``minis2s.models``, ``minis2s.search``, ...), never
with a second copy of the formula, and compares what the student's functions return, stopping at
the first difference. Backward passes are compared with the library's autograd (the same random
cotangent on both sides) and then run through ``grad.gradcheck`` as one graph node, so that the
backward also has to agree with finite differences of the forward.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .exercise import Exercise
from .checking import (CheckFailed, call, expect_cases, expect_close, expect_equal,
                       gradcheck_student, library_vjp, rng)

EXERCISES: list[Exercise] = []


def exercise(number, title, concept, functions, mistake):
    def register(check):
        EXERCISES.append(Exercise(number, title, concept, tuple(functions), check, mistake))
        return check
    return register


def _t(a):
    import grad
    return grad.tensor(np.asarray(a, dtype=np.float64))


# =============================================================================== language models
@exercise(1, "entropy, perplexity and cross-entropy", "concepts.md 3-6",
          ["entropy", "perplexity", "cross_entropy_from_perplexity"],
          "perplexity = log(cross-entropy), as course notes sometimes write it")
def check_entropy_perplexity(student, report):
    from minis2s import metrics
    dists = [[0.25, 0.25, 0.25, 0.25], [0.97, 0.01, 0.01, 0.01], [1 / 6] * 6, [0.5, 0.5, 0.0],
             [1.0, 0.0, 0.0]]
    expect_cases("entropy", [call(student, "entropy", np.array(p)) for p in dists],
                 [metrics.entropy(p) for p in dists], [f"p={p}" for p in dists],
                 "H(p) = -sum p log p in nats, and a term with p(x) = 0 counts 0 (0 log 0 = 0)")
    report.ok("entropy matches minis2s.metrics.entropy (flat, sharp, with zeros)")
    ces = [0.0, 0.5, 1.2398, 2.0, 3.7]
    expect_cases("perplexity", [call(student, "perplexity", ce) for ce in ces],
                 [metrics.perplexity(ce) for ce in ces], [f"cross_entropy={ce}" for ce in ces],
                 "perplexity = exp(cross-entropy); it is the cross-entropy that is log(perplexity), "
                 "not the other way round (docs/concepts.md section 6)")
    report.ok("perplexity matches minis2s.metrics.perplexity")
    ppls = [1.0, 3.455, 6.0, 100.0]
    expect_cases("cross_entropy_from_perplexity",
                 [call(student, "cross_entropy_from_perplexity", p) for p in ppls],
                 [metrics.cross_entropy_from_perplexity(p) for p in ppls],
                 [f"perplexity={p}" for p in ppls],
                 "cross-entropy = log(perplexity) (natural log: nats)")
    report.ok("cross_entropy_from_perplexity matches minis2s.metrics.cross_entropy_from_perplexity")


def _toy_lm_corpus():
    return [s.split() for s in ["the cat sat", "the dog sat", "the cat ran", "a dog ran far",
                                "the cow sat", "a cat sat"]]


@exercise(2, "perplexity of a corpus (what is counted)", "concepts.md 6",
          ["corpus_perplexity"], "the mean of the per-sentence perplexities")
def check_corpus_perplexity(student, report):
    from minis2s.lm import NGramLM
    lm = NGramLM(order=2, smoothing="add-k", k=0.5).fit(_toy_lm_corpus())
    corpora = [[["the", "cat", "sat"]],
               [["the", "cat", "sat"], ["a", "dog"]],
               [["the", "dog", "ran", "far", "away", "the", "cat"], ["sat"], []],
               [["a", "cow", "sat"], ["the", "cat", "ran", "far"], ["dog"]]]
    expect_cases("corpus_perplexity",
                 [call(student, "corpus_perplexity", lm.logprob, c) for c in corpora],
                 [lm.perplexity(c) for c in corpora], [f"sentences={c}" for c in corpora],
                 "sum the log-probabilities of the whole corpus, divide by the number of predicted "
                 "tokens (len(s) + 1 per sentence: </s> counted, <s> not), then exp; never average "
                 "per-sentence perplexities (docs/concepts.md section 6)")
    report.ok("corpus_perplexity matches minis2s.lm.NGramLM.perplexity (an empty sentence included)")


_NGRAM_QUERIES = [("<s>", "the"), ("the", "cat"), ("cat", "sat"), ("sat", "</s>"), ("the", "ran"),
                  ("dog", "zebra"), ("zebra", "sat"), ("<s>", "</s>"), ("far", "</s>")]


@exercise(3, "add-k smoothing (bigram)", "concepts.md 1", ["add_k_prob"],
          "|V| counted without </s> and <unk>")
def check_add_k(student, report):
    from minis2s.lm import NGramLM
    corpus = _toy_lm_corpus()
    for k in (1.0, 0.1):
        lm = NGramLM(order=2, smoothing="add-k", k=k).fit(corpus)
        expect_cases(f"add_k_prob with k={k}",
                     [call(student, "add_k_prob", corpus, w, h, k) for h, w in _NGRAM_QUERIES],
                     [lm.prob(w, [h]) for h, w in _NGRAM_QUERIES],
                     [f"P({w} | {h})" for h, w in _NGRAM_QUERIES],
                     "(c(h w) + k) / (c(h) + k |V|), where V is the distinct training words plus "
                     "</s> and <unk> (both can be predicted); unknown words read as <unk>")
    report.ok("add_k_prob matches NGramLM(order=2, smoothing='add-k') (seen, unseen, <unk>, </s>)")


@exercise(4, "Kneser-Ney smoothing (interpolated, bigram)", "concepts.md 1, 7",
          ["kneser_ney_prob"], "the lower order uses raw counts c(w), not continuation counts")
def check_kneser_ney(student, report):
    from minis2s.lm import NGramLM
    # "francisco" is frequent but always follows "san": its continuation count is 1.
    corpus = [s.split() for s in ["i live in san francisco", "san francisco is far",
                                  "i like san francisco", "i live in paris", "paris is far",
                                  "we like paris", "i like it", "san francisco"]]
    queries = [("<s>", "i"), ("in", "paris"), ("in", "francisco"), ("like", "francisco"),
               ("like", "paris"), ("far", "</s>"), ("zebra", "paris"), ("zebra", "francisco"),
               ("san", "francisco"), ("is", "zebra")]
    for d in (0.75, 0.5):
        lm = NGramLM(order=2, smoothing="kneser-ney", discount=d).fit(corpus)
        expect_cases(f"kneser_ney_prob with discount={d}",
                     [call(student, "kneser_ney_prob", corpus, w, h, d) for h, w in queries],
                     [lm.prob(w, [h]) for h, w in queries],
                     [f"P({w} | {h})" for h, w in queries],
                     "the unigram level of Kneser-Ney counts in how many different contexts a word "
                     "appears, N1+(. w) (the distinct tokens seen right before it, <s> included), "
                     "not how often: 'francisco' is frequent but only ever follows 'san'")
    report.ok("kneser_ney_prob matches NGramLM(order=2, smoothing='kneser-ney') "
              "(seen and unseen contexts, continuation counts)")


# =============================================================================== backward passes
def _elementwise_backward(student, report, name, lib_op, forward_np):
    """Check ``name(y, g)`` = dL/dx for y = op(x) against autograd and gradcheck."""
    r = rng(5)
    x = r.normal(size=(3, 4)) * 2.0
    y = forward_np(x)
    g = r.normal(size=(3, 4))
    expected = library_vjp(lib_op, [x], [g])[0]
    hint = {"sigmoid_backward": "sigmoid'(x) = y (1 - y), written with the OUTPUT y",
            "tanh_backward": "tanh'(x) = 1 - tanh(x)^2 = 1 - y^2: y is already tanh(x), do not "
                             "apply tanh to it again"}[name]
    expect_close(name, call(student, name, y, g), expected, hint, atol=1e-9, rtol=1e-7)
    gradcheck_student(name, forward_np, lambda x, g: call(student, name, forward_np(x), g),
                      [x[:2, :3]], hint)
    report.ok(f"{name} matches the library's autograd and passes gradcheck")


@exercise(5, "sigmoid and tanh backward", "derivations.md (the LSTM cell)",
          ["sigmoid_backward", "tanh_backward"], "tanh backward as 1 - tanh(y)^2: tanh applied twice")
def check_sigmoid_tanh(student, report):
    from grad import ops
    _elementwise_backward(student, report, "sigmoid_backward", ops.sigmoid,
                          lambda x: 1.0 / (1.0 + np.exp(-x)))
    _elementwise_backward(student, report, "tanh_backward", ops.tanh, np.tanh)


def _logits_cases():
    r = rng(6)
    plain = r.normal(size=(3, 5)) * 2.0
    big = np.array([[1000.0, 999.0, 998.0, -1000.0, 0.0]])      # overflows exp() without the shift
    return plain, big


@exercise(6, "softmax and its backward", "concepts.md 13; derivations.md (softmax)",
          ["softmax", "softmax_backward"], "backward without the cross term: y * g")
def check_softmax(student, report):
    from grad import functional as F
    plain, big = _logits_cases()
    for x, case in ((plain, "random logits (3, 5)"), (big, "logits near 1000")):
        expect_close("softmax", call(student, "softmax", x), F.softmax(_t(x), dim=-1).numpy(),
                     "subtract the row maximum before exp (exp(1000) overflows); sum over the last "
                     "axis with keepdims=True", case=case)
    report.ok("softmax matches grad.functional.softmax (also for logits near 1000)")
    g = rng(7).normal(size=plain.shape)
    y = F.softmax(_t(plain), dim=-1).numpy()
    hint = ("the Jacobian is diag(y) - y y^T, so dx = y * (g - sum(g * y)) per row: without the "
            "cross term - y y^T it is wrong everywhere (docs/derivations.md, softmax)")
    expect_close("softmax_backward", call(student, "softmax_backward", y, g),
                 library_vjp(lambda t: F.softmax(t, dim=-1), [plain], [g])[0], hint)
    gradcheck_student("softmax_backward", lambda x: F.softmax(_t(x), dim=-1).numpy(),
                      lambda x, g: call(student, "softmax_backward",
                                        F.softmax(_t(x), dim=-1).numpy(), g), [plain[:2, :4]], hint)
    report.ok("softmax_backward matches the library's autograd and passes gradcheck")


@exercise(7, "log-softmax and its backward", "concepts.md 5; derivations.md (log-softmax)",
          ["log_softmax", "log_softmax_backward"], "forward as x - log(sum(exp(x))): overflows")
def check_log_softmax(student, report):
    from grad import functional as F
    plain, big = _logits_cases()
    for x, case in ((plain, "random logits (3, 5)"), (big, "logits near 1000")):
        expect_close("log_softmax", call(student, "log_softmax", x),
                     F.log_softmax(_t(x), dim=-1).numpy(),
                     "x - logsumexp(x), with logsumexp(x) = m + log(sum(exp(x - m))) for the row "
                     "maximum m: exp(1000) is inf in float64", case=case)
    report.ok("log_softmax matches grad.functional.log_softmax (also for logits near 1000)")
    g = rng(8).normal(size=plain.shape)
    y = F.log_softmax(_t(plain), dim=-1).numpy()
    hint = "dx = g - exp(y) * sum(g) per row (exp(y) is the softmax)"
    expect_close("log_softmax_backward", call(student, "log_softmax_backward", y, g),
                 library_vjp(lambda t: F.log_softmax(t, dim=-1), [plain], [g])[0], hint)
    gradcheck_student("log_softmax_backward", lambda x: F.log_softmax(_t(x), dim=-1).numpy(),
                      lambda x, g: call(student, "log_softmax_backward",
                                        F.log_softmax(_t(x), dim=-1).numpy(), g),
                      [plain[:2, :4]], hint)
    report.ok("log_softmax_backward matches the library's autograd and passes gradcheck")


@exercise(8, "softmax cross-entropy with ignore_index", "concepts.md 5, 6",
          ["cross_entropy", "cross_entropy_backward"],
          "the mean divides by all N rows, ignored (PAD) rows included")
def check_cross_entropy(student, report):
    import grad
    from grad import functional as F
    r = rng(9)
    logits = r.normal(size=(6, 5)) * 2.0
    cases = [(np.array([1, 0, 4, 2, 3, 1]), -100, "no ignored target"),
             (np.array([1, 0, 4, 0, 3, 0]), 0, "ignore_index=0 (PAD) on 3 rows")]
    hint = ("mean over the rows whose target is not ignore_index: divide by their number, not by "
            "N (PAD positions are not predicted tokens, docs/concepts.md section 6)")
    for target, ignore, case in cases:
        expected = F.cross_entropy(_t(logits), grad.tensor(target), ignore_index=ignore).item()
        expect_close("cross_entropy", call(student, "cross_entropy", logits, target, ignore),
                     expected, hint, case=case)
    report.ok("cross_entropy matches grad.functional.cross_entropy (with and without ignored rows)")
    bhint = ("d(mean loss)/d logits = (softmax(logits) - onehot(target)) / n_valid on valid rows, "
             "0 on ignored rows")
    for target, ignore, case in cases:
        expected = library_vjp(lambda t: F.cross_entropy(t, grad.tensor(target), ignore_index=ignore),
                               [logits], [np.array(1.0)])[0]
        expect_close("cross_entropy_backward",
                     call(student, "cross_entropy_backward", logits, target, ignore), expected,
                     bhint, case=case)
    target, ignore, _ = cases[1]
    gradcheck_student("cross_entropy_backward",
                      lambda x: np.asarray(call(student, "cross_entropy", x, target[:x.shape[0]], ignore)),
                      lambda x, g: g * np.asarray(call(student, "cross_entropy_backward", x,
                                                       target[:x.shape[0]], ignore)),
                      [logits[:4]], bhint)
    report.ok("cross_entropy_backward matches the library's autograd and passes gradcheck")


@exercise(9, "embedding backward (a scatter-add)", "concepts.md 7; derivations.md (embedding)",
          ["embedding_backward"], "dW[ids] = g: assignment keeps only the last of repeated ids")
def check_embedding(student, report):
    import grad
    from grad import functional as F
    r = rng(10)
    ids = np.array([[3, 1, 3, 0], [2, 3, 0, 0]])              # 3 repeats; 0 is padding
    n_rows, dim = 5, 3
    weight = r.normal(size=(n_rows, dim))
    g = r.normal(size=(2, 4, dim))
    hint = ("every occurrence of an id adds its gradient row: use np.add.at(dW, ids.ravel(), ...) "
            "(dW[ids] += g keeps only one of repeated ids, like dW[ids] = g); the padding_idx row "
            "gets 0")
    for pad, case in ((None, "no padding_idx"), (0, "padding_idx=0")):
        expected = library_vjp(lambda w: F.embedding(grad.tensor(ids), w, padding_idx=pad),
                               [weight], [g])[0]
        expect_close("embedding_backward",
                     call(student, "embedding_backward", ids, g, n_rows, pad), expected, hint, case=case)
    gradcheck_student("embedding_backward", lambda w: w[ids],
                      lambda w, gg: call(student, "embedding_backward", ids, gg, n_rows, None),
                      [weight], hint)
    report.ok("embedding_backward matches the library's autograd (repeated ids, padding row) "
              "and passes gradcheck")


# =============================================================================== LSTM
def _lstm_inputs(seed=11, batch=2, n_in=3, hidden=4):
    r = rng(seed)
    return dict(x=r.normal(size=(batch, n_in)), h=r.normal(size=(batch, hidden)) * 0.5,
                c=r.normal(size=(batch, hidden)), w_ih=r.normal(size=(4 * hidden, n_in)) * 0.7,
                w_hh=r.normal(size=(4 * hidden, hidden)) * 0.7, b_ih=r.normal(size=4 * hidden) * 0.3,
                b_hh=r.normal(size=4 * hidden) * 0.3)


_LSTM_ORDER = ("x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh")


@exercise(10, "the LSTM cell, forward", "concepts.md 7, 8; grad/functional.py lstm_cell_reference",
          ["lstm_cell"], "h' = o * c' (the tanh of the new cell state forgotten)")
def check_lstm_forward(student, report):
    from grad import functional as F
    inputs = _lstm_inputs()
    h_new, c_new = F.lstm_cell_reference(*(_t(inputs[k]) for k in _LSTM_ORDER))
    out = call(student, "lstm_cell", *(inputs[k] for k in _LSTM_ORDER))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed("lstm_cell must return the pair (h_new, c_new)",
                          "return h_new, c_new")
    hint = ("z = x W_ih^T + b_ih + h W_hh^T + b_hh, split into i, f, g, o (PyTorch's order); "
            "c' = f c + i g; h' = o tanh(c')")
    expect_close("lstm_cell c_new", out[1], c_new.numpy(), hint)
    expect_close("lstm_cell h_new", out[0], h_new.numpy(), hint)
    report.ok("lstm_cell matches grad.functional.lstm_cell_reference (h' and c')")


@exercise(11, "the LSTM cell, backward", "derivations.md (the LSTM cell)",
          ["lstm_cell_backward"], "dc' without the incoming gc (only the path through h')")
def check_lstm_backward(student, report):
    from grad import functional as F
    inputs = _lstm_inputs()
    arrays = [inputs[k] for k in _LSTM_ORDER]
    r = rng(12)
    gh, gc = r.normal(size=inputs["h"].shape), r.normal(size=inputs["c"].shape)
    expected = library_vjp(lambda *ts: F.lstm_cell_reference(*ts), arrays, [gh, gc])
    got = call(student, "lstm_cell_backward", *arrays, gh, gc)
    names = ("dx", "dh", "dc", "dw_ih", "dw_hh", "db_ih", "db_hh")
    if not isinstance(got, (tuple, list)) or len(got) != 7:
        raise CheckFailed("lstm_cell_backward must return 7 gradients: " + ", ".join(names),
                          "return dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh")
    hint = ("dc' = gc + gh * o * (1 - tanh(c')^2) (the cell state gets gradient from h' AND from "
            "the next step); dz_i = dc' g i(1-i), dz_f = dc' c f(1-f), dz_g = dc' i (1-g^2), "
            "dz_o = gh tanh(c') o(1-o); dc = dc' f (docs/derivations.md)")
    for name, e, g in zip(names, expected, got):
        expect_close(f"lstm_cell_backward {name}", g, e, hint)
    n = inputs["h"].shape[1]

    def forward(*xs):
        h_new, c_new = F.lstm_cell_reference(*(_t(a) for a in xs))
        return np.concatenate([h_new.numpy(), c_new.numpy()], axis=1)         # (B, 2H)

    gradcheck_student("lstm_cell_backward", forward,
                      lambda *a: call(student, "lstm_cell_backward", *a[:-1], a[-1][:, :n], a[-1][:, n:]),
                      arrays, hint)
    report.ok("lstm_cell_backward matches the library's autograd (all 7 gradients) and passes "
              "gradcheck")


# =============================================================================== attention
def _attention_inputs(seed=13):
    r = rng(seed)
    query = r.normal(size=(2, 3))
    memory = r.normal(size=(2, 4, 3))
    pad_mask = np.array([[False, False, False, False], [False, False, True, True]])
    return query, memory, pad_mask


@exercise(12, "Luong (dot) attention with a padding mask", "concepts.md 13, 14",
          ["attention"], "masking after the softmax: the weights no longer sum to 1")
def check_attention(student, report):
    import grad
    from grad import functional as F
    query, memory, pad_mask = _attention_inputs()
    hint = ("scores = memory q; set the PAD scores to -inf BEFORE the softmax, so the other "
            "weights are renormalised (sum 1) and PAD gets exactly 0")
    for mask, case in ((None, "no padding"), (pad_mask, "sentence 1 has 2 PAD positions")):
        context, weights = F.attention_lookup(_t(query), _t(memory), mask)
        out = call(student, "attention", query, memory, mask)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed("attention must return the pair (context, weights)", hint)
        expect_close("attention weights", out[1], grad.backend.to_numpy(weights.data), hint, case=case)
        expect_close("attention context", out[0], context.numpy(), hint, case=case)
    if not np.all(np.asarray(out[1])[pad_mask] == 0.0):
        raise CheckFailed("attention weights at PAD are not exactly 0", hint)
    report.ok("attention matches grad.functional.attention_lookup (PAD weights exactly 0)")


@exercise(13, "attention backward", "derivations.md (attention)", ["attention_backward"],
          "d_memory only through the scores: the values' term a (x) g_context forgotten")
def check_attention_backward(student, report):
    from grad import functional as F
    query, memory, pad_mask = _attention_inputs()
    g = rng(14).normal(size=query.shape)
    hint = ("memory is both the keys and the values: d_memory = a (x) g_context (values) + "
            "gs (x) q (keys), with ga = memory g_context and gs = a * (ga - sum(a * ga)); "
            "d_query = gs^T memory (docs/derivations.md, attention)")
    for mask, case in ((None, "no padding"), (pad_mask, "with padding")):
        expected = library_vjp(lambda q, m: F.attention_lookup(q, m, mask)[0], [query, memory], [g])
        got = call(student, "attention_backward", query, memory, mask, g)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed("attention_backward must return (d_query, d_memory)", hint)
        expect_close("attention_backward d_query", got[0], expected[0], hint, case=case)
        expect_close("attention_backward d_memory", got[1], expected[1], hint, case=case)
    gradcheck_student("attention_backward",
                      lambda q, m: F.attention_lookup(_t(q), _t(m), pad_mask)[0].numpy(),
                      lambda q, m, gg: call(student, "attention_backward", q, m, pad_mask, gg),
                      [query, memory], hint)
    report.ok("attention_backward matches the library's autograd and passes gradcheck")


# =============================================================================== decoder
def _tiny_decoder(seed=15, vocab=9, emb=5, hidden=6, src_len=4, batch=3):
    import grad
    from minis2s.models import Decoder
    dec = Decoder(vocab, emb, hidden, num_layers=1, dropout=0.0, attention="general",
                  input_feeding=True, generator=grad.Generator(seed))
    dec.eval()
    r = rng(seed)
    memory = r.normal(size=(batch, src_len, hidden)).astype(np.float32)
    pad_mask = np.zeros((batch, src_len), dtype=bool)
    pad_mask[1, 3:] = True
    pad_mask[2, 2:] = True
    return dec, memory, pad_mask


def decoder_params(dec) -> dict:
    """The decoder's weights as float64 NumPy arrays under the exercise's names."""
    p = dict(dec.named_parameters())
    names = {"embedding": "embedding.weight", "w_ih": "rnn.weight_ih_l0", "w_hh": "rnn.weight_hh_l0",
             "b_ih": "rnn.bias_ih_l0", "b_hh": "rnn.bias_hh_l0", "w_a": "attention.query.weight",
             "w_c": "attention.combine.weight", "w_out": "output_layer.weight",
             "b_out": "output_layer.bias"}
    return {k: p[v].numpy().astype(np.float64) for k, v in names.items()}


@exercise(14, "one decoder step with input feeding", "concepts.md 15", ["decoder_step"],
          "the input built as [h~_prev; emb] instead of [emb; h~_prev]")
def check_decoder_step(student, report):
    from grad.tensor import Tensor, no_grad
    dec, memory, pad_mask = _tiny_decoder()
    r = rng(16)
    batch, hidden = memory.shape[0], dec.hidden_size
    y_prev = np.array([1, 4, 7])
    h_tilde = (r.normal(size=(batch, hidden)) * 0.5).astype(np.float32)
    h = (r.normal(size=(batch, hidden)) * 0.5).astype(np.float32)
    c = r.normal(size=(batch, hidden)).astype(np.float32)
    with no_grad():
        states = [Tensor(np.concatenate([h, c], axis=1))]
        log_probs, new_h_tilde, _ = dec.step(Tensor(y_prev), Tensor(h_tilde), states, Tensor(memory),
                                             pad_mask, dec.weights())
        new_state = states[0].numpy()
    got = call(student, "decoder_step", y_prev, h_tilde.astype(np.float64), h.astype(np.float64),
               c.astype(np.float64), memory.astype(np.float64), pad_mask, decoder_params(dec))
    hint = ("x_t = [emb(y_prev); h~_prev] (embedding FIRST, as the layer-0 weight W_ih (4H, E + H) "
            "is laid out); h, c = LSTM(x_t, (h, c)); q = W_a h; context = attention(q, memory, "
            "mask); h~ = tanh(W_c [h; context]); log_softmax(W_out h~ + b_out)")
    if not isinstance(got, (tuple, list)) or len(got) != 4:
        raise CheckFailed("decoder_step must return (log_probs, h_tilde, h, c)", hint)
    tol = dict(atol=2e-5, rtol=1e-4)                    # the library runs in float32
    expect_close("decoder_step h", got[2], new_state[:, :hidden], hint, **tol)
    expect_close("decoder_step c", got[3], new_state[:, hidden:], hint, **tol)
    expect_close("decoder_step h_tilde", got[1], new_h_tilde.numpy(), hint, **tol)
    expect_close("decoder_step log_probs", got[0], log_probs.numpy(), hint, **tol)
    report.ok("decoder_step matches minis2s.models.Decoder.step (h, c, h~ and log-probabilities)")


@exercise(15, "teacher forcing with a ratio", "concepts.md 12", ["choose_inputs"],
          "the model's own token fed with probability tf_ratio instead of 1 - tf_ratio")
def check_teacher_forcing(student, report):
    import grad
    from grad import functional as F
    from grad.tensor import Tensor, no_grad
    from minis2s.models import Seq2Seq
    model = Seq2Seq(8, 9, emb_size=5, hidden_size=6, num_layers=1, dropout=0.0,
                    generator=grad.Generator(17))
    model.eval()
    src = np.array([[4, 5, 6, 7, 2], [5, 5, 2, 0, 0], [7, 6, 4, 2, 0], [6, 2, 0, 0, 0]])
    lengths = np.array([5, 3, 4, 2])
    tgt_in = np.array([[1, 7, 6, 5, 4], [1, 5, 5, 0, 0], [1, 4, 6, 7, 0], [1, 6, 0, 0, 0]])
    hint = ("at each step t >= 1 the sequence feeds its own previous argmax (never PAD=0 or "
            "BOS=1) where u < 1 - tf_ratio, else the reference token: tf_ratio is the "
            "probability of TEACHER forcing")
    for ratio, seed in ((0.75, 3), (0.3, 4), (0.0, 5), (1.0, 6)):
        with no_grad():
            expected = F.log_softmax(model.logits(src, lengths, tgt_in, tf_ratio=ratio,
                                                  generator=grad.Generator(seed)), dim=-1).numpy()
            draws = np.random.Generator(np.random.PCG64(seed))   # the generator's own draws
            memory, mask, states = model.encode(src, lengths)
            w = model.decoder.weights()
            feed = Tensor(np.zeros((src.shape[0], model.decoder.hidden_size), dtype=np.float32))
            y, steps = tgt_in[:, 0], []
            for t in range(tgt_in.shape[1]):
                if t > 0:
                    prev_logits = model.decoder.output_layer(feed).numpy()        # (B, V)
                    u = draws.random(src.shape[0]) if ratio < 1.0 else np.ones(src.shape[0])
                    y = np.asarray(call(student, "choose_inputs", tgt_in[:, t], prev_logits,
                                        ratio, u))
                    if y.shape != (src.shape[0],) or not np.issubdtype(y.dtype, np.integer):
                        raise CheckFailed(f"choose_inputs returned {y.dtype} {y.shape}, not {src.shape[0]} "
                                          "integer ids", hint)
                log_probs, feed, _ = model.decoder.step(Tensor(y), feed, states, memory, mask, w)
                steps.append(log_probs.numpy())
        expect_close("log-probabilities after your choices", np.stack(steps, axis=1), expected,
                     hint + ". The coordinate is [sentence, step, token] of the decoder's output",
                     atol=2e-5, rtol=1e-4, case=f"tf_ratio={ratio}")
    report.ok("choose_inputs reproduces Seq2Seq.logits with tf_ratio 0.75, 0.3, 0 and 1 "
              "(same random draws)")


@exercise(16, "scheduled sampling: the ratio by epoch", "concepts.md 12", ["tf_ratio_for_epoch"],
          "the linear schedule without its floor: the ratio goes negative")
def check_schedule(student, report):
    from minis2s.tf_schedule import tf_ratio_for_epoch
    settings = [("constant", 0.75, None, 0.0), ("linear", 1.0, 0.15, 0.0), ("linear", 0.9, 0.2, 0.25),
                ("exponential", 1.0, 0.7, 0.0), ("exponential", 0.8, 0.5, 0.1),
                ("inverse-sigmoid", 1.0, 3.0, 0.0), ("inverse-sigmoid", 0.9, 1.5, 0.2)]
    hint = ("i = epoch - 1; linear r0 - d i, exponential r0 d^i, inverse-sigmoid "
            "r0 (d + 1) / (d + exp(i / d)); then max(tf_min, ...) (minis2s/tf_schedule.py)")
    for schedule, r0, d, m in settings:
        cfg = SimpleNamespace(tf_schedule=schedule, tf_ratio=r0, tf_decay=d, tf_min=m)
        epochs = range(1, 13)
        expect_cases(f"tf_ratio_for_epoch {schedule} (tf_ratio={r0}, decay={d}, minimum={m})",
                     [call(student, "tf_ratio_for_epoch", schedule, e, r0, d, m) for e in epochs],
                     [tf_ratio_for_epoch(cfg, e) for e in epochs], [f"epoch {e}" for e in epochs],
                     hint)
    report.ok("tf_ratio_for_epoch matches minis2s.tf_schedule for all four schedules")


# =============================================================================== decoding
def _greedy_model():
    import grad
    from minis2s.models import Seq2Seq
    model = Seq2Seq(8, 7, emb_size=5, hidden_size=6, num_layers=1, dropout=0.0,
                    generator=grad.Generator(0))
    model.decoder.output_layer.bias.data[2] += 0.5     # EOS: sentences end at steps 9, 0, 3, never
    model.eval()
    src = np.array([[4, 5, 6, 7, 2], [5, 5, 2, 0, 0], [7, 6, 4, 2, 0], [6, 2, 0, 0, 0],
                    [4, 4, 4, 2, 0]])
    lengths = np.array([5, 3, 4, 2, 4])
    return model, src, lengths


@exercise(17, "greedy decoding", "concepts.md 16", ["greedy_decode"],
          "after EOS the sentence keeps getting tokens instead of PAD")
def check_greedy(student, report):
    from grad.tensor import Tensor, no_grad
    from minis2s.search import greedy
    model, all_src, all_lengths = _greedy_model()
    hint = ("at each step take the argmax over the vocabulary with PAD and BOS excluded; a "
            "sentence that has produced EOS gets PAD from then on; stop when every sentence is "
            "done or after max_len steps")
    for rows, max_len, case in ((slice(None), 12, "max_len=12, 2 sentences never end"),
                                (slice(None), 3, "max_len=3"),
                                ([0, 1, 3], 12, "all 3 end before max_len=12")):
        src, lengths = all_src[rows], all_lengths[rows]
        expected = greedy(model, src, lengths, max_len=max_len).tokens
        with no_grad():
            memory, mask, states = model.encode(src, lengths)
            w = model.decoder.weights()
            feed = [Tensor(np.zeros((src.shape[0], model.decoder.hidden_size), dtype=np.float32))]

            def step(y_prev):
                log_probs, feed[0], _ = model.decoder.step(Tensor(np.asarray(y_prev)), feed[0],
                                                           states, memory, mask, w)
                return log_probs.numpy()
            got = call(student, "greedy_decode", step, src.shape[0], max_len)
        expect_equal("greedy_decode tokens", got, expected, hint, case=case)
    report.ok("greedy_decode matches minis2s.search.greedy (EOS at different steps, PAD after it, "
              "max_len reached)")


@exercise(18, "the GNMT length penalty", "concepts.md 16", ["length_penalty", "best_hypothesis"],
          "(5 + L) ** alpha / 6: the parentheses forgotten")
def check_length_penalty(student, report):
    from minis2s.search import length_penalty
    cases = [(1, 1.0), (5, 1.0), (10, 0.6), (20, 2.0), (7, 0.0)]
    hint = "lp(L) = ((5 + L) / 6) ** alpha; a hypothesis scores log P / lp(L)"
    expect_cases("length_penalty", [call(student, "length_penalty", n, a) for n, a in cases],
                 [float(length_penalty(n, a)) for n, a in cases],
                 [f"L={n}, alpha={a}" for n, a in cases], hint)
    report.ok("length_penalty matches minis2s.search.length_penalty")
    log_p = np.array([-2.0, -2.6, -4.1, -3.0])
    lengths = np.array([2, 6, 14, 9])
    alphas = [0.0, 0.5, 1.0, 2.0]
    expected = [int(np.argmax(log_p / length_penalty(lengths, a))) for a in alphas]
    expect_cases("best_hypothesis", [call(student, "best_hypothesis", log_p, lengths, a) for a in alphas],
                 expected, [f"alpha={a}" for a in alphas], hint)
    report.ok("best_hypothesis picks the library's best for alpha 0, 0.5, 1 and 2")


# =============================================================================== BLEU
_BLEU_CORPUS = (
    [s.split() for s in ["the the the the", "the cat is on a mat", "a cat sat on the mat today",
                         "the cat", "on the mat the cat sat"]],
    [s.split() for s in ["the cat is on the mat", "the cat is on the mat", "the cat sat on the mat",
                         "the cat is here", "the cat sat on the mat"]])


@exercise(19, "BLEU: modified (clipped) n-gram precision", "concepts.md 17", ["modified_precision"],
          "n-gram matches not clipped by the reference counts")
def check_modified_precision(student, report):
    from minis2s.metrics import bleu_details
    hyps, refs = _BLEU_CORPUS
    hint = ("each hypothesis n-gram is credited at most as often as it occurs in the reference "
            "(clipping: 'the the the the' has 2 matches against a reference with two 'the'); "
            "sum matches and totals over the corpus")
    subsets = [(hyps[:1], refs[:1], "the the the the"), (hyps, refs, "5 sentences")]
    for h, r, name in subsets:
        for n in (1, 2, 3, 4):
            details = bleu_details(h, r, max_n=n)
            got = call(student, "modified_precision", h, r, n)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise CheckFailed("modified_precision must return (matches, total)", hint)
            expect_cases(f"modified_precision n={n}", got,
                         [details["matches"][n - 1], details["totals"][n - 1]],
                         [f"{name}: matches", f"{name}: total"], hint)
    report.ok("modified_precision matches minis2s.metrics.bleu_details (orders 1-4, clipping)")


@exercise(20, "BLEU: brevity penalty and corpus BLEU", "concepts.md 17",
          ["brevity_penalty", "corpus_bleu"], "brevity penalty exp(1 - c / r) instead of exp(1 - r / c)")
def check_bleu(student, report):
    from minis2s.metrics import bleu_details, corpus_bleu
    hyps, refs = _BLEU_CORPUS
    lengths = [(6, 6), (4, 6), (9, 6), (1, 5), (10, 13)]
    hint = ("BP = 1 if c >= r else exp(1 - r / c), with c, r the TOTAL hypothesis and reference "
            "lengths; BLEU = 100 * BP * exp(mean of log p_n, n = 1..4), 0 if any p_n is 0")
    expected = []
    for c, r in lengths:
        expected.append(bleu_details([["x"] * c], [["x"] * r], max_n=1)["bp"])
    expect_cases("brevity_penalty", [call(student, "brevity_penalty", c, r) for c, r in lengths],
                 expected, [f"c={c}, r={r}" for c, r in lengths], hint)
    report.ok("brevity_penalty matches minis2s.metrics.bleu_details")
    corpora = [(hyps, refs), (hyps[1:3], refs[1:3]), (hyps[3:4], refs[3:4]), (refs, refs)]
    expect_cases("corpus_bleu", [call(student, "corpus_bleu", h, r) for h, r in corpora],
                 [corpus_bleu(h, r) for h, r in corpora],
                 ["5 sentences", "2 sentences", "'the cat' (short)", "perfect output"], hint)
    report.ok("corpus_bleu matches minis2s.metrics.corpus_bleu")


EXERCISES.sort(key=lambda ex: ex.number)
assert [ex.number for ex in EXERCISES] == list(range(1, len(EXERCISES) + 1))
