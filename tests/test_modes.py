"""``grad.reference_mode()``: the switch itself (nesting, restoring, decorator, exceptions); the
``@fused(reference=...)`` registry (every pair named ``x_reference`` / ``x``, the reference directly
above); each reference against its fast twin (values and gradients to 1e-10 in float64, and
gradcheck); and a traced training step that, in reference mode, enters no fast function and no
accumulation bookkeeping, while outside it the fast twins do run."""
import numpy as np
import pytest

import grad
import grad.functional as F
from grad import backend as B
from helpers import backends


def graph_ops(t) -> set:
    """The op names of every node in the graph behind ``t``."""
    seen, todo, names = set(), [t], set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        names.add(node._op)
        todo.extend(node._parents)
    return names


def test_switch_nests_restores_and_decorates():
    assert grad.is_reference_mode() is False
    outer = grad.reference_mode()
    with outer:
        assert grad.is_reference_mode()
        with grad.reference_mode(False):
            assert not grad.is_reference_mode()
            with outer:                                   # the same object entered again
                assert grad.is_reference_mode()
            assert not grad.is_reference_mode()
        assert grad.is_reference_mode()
    assert grad.is_reference_mode() is False
    with pytest.raises(KeyError):
        with grad.reference_mode():
            raise KeyError("an error inside the block")
    assert grad.is_reference_mode() is False              # restored on the way out

    @grad.reference_mode()
    def inside():
        """doc"""
        return grad.is_reference_mode()
    assert inside() is True and grad.is_reference_mode() is False
    assert inside.__name__ == "inside" and inside.__doc__ == "doc"
    assert grad.modes.is_reference_mode is grad.is_reference_mode


@backends
def test_fused_functions_dispatch_to_their_twins(backend):
    with B.use(backend):
        rng = np.random.default_rng(0)
        x = grad.tensor(rng.normal(size=(2, 3, 4)), requires_grad=True)
        w = grad.tensor(rng.normal(size=(4,)), requires_grad=True)
        fast = [F.layer_norm(x, 4, w), F.scaled_dot_product_attention(x, x, x, is_causal=True)]
        with grad.reference_mode():
            slow = [F.layer_norm(x, 4, w), F.scaled_dot_product_attention(x, x, x, is_causal=True)]
        assert fast[0]._op == "layer_norm" and fast[1]._op == "scaled_dot_product_attention"
        for t in slow:
            assert not graph_ops(t) & {"layer_norm", "scaled_dot_product_attention"}, graph_ops(t)
        for a, b in zip(fast, slow):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


# ================================================================ the @fused registry and its pairs
import ast                                                    # noqa: E402
import inspect                                                # noqa: E402
import sys                                                    # noqa: E402

import grad.accumulate as acc                                 # noqa: E402
from grad import nn, optim                                    # noqa: E402
from grad.modes import fused_functions                        # noqa: E402
import minis2s.models.decoder                                 # noqa: E402,F401  (their fused
import minis2s.models.encoder                                 # noqa: E402,F401   inference paths)

REGISTERED = {"grad.accumulate.accumulate", "grad.ops.getitem", "grad.ops.topk", "grad.functional.softmax",
              "grad.functional.log_softmax", "grad.functional.cross_entropy",
              "grad.functional.linear", "grad.functional.lstm_step", "grad.functional.lstm_cell",
              "grad.functional.lstm_layer",
              "grad.functional.attention_lookup", "grad.functional.layer_norm",
              "grad.functional.scaled_dot_product_attention",
              "grad.functional.multi_head_attention", "grad.optim.adam_update",
              "grad.optim.adam_step", "grad.nn.utils.clip_gradients",
              "minis2s.models.decoder.decoder_step", "minis2s.models.encoder.encoder_lstm"}


def test_every_fast_function_is_registered_with_its_reference_directly_above_it():
    fast_functions = fused_functions()
    assert {f"{f.__module__}.{f.__name__}" for f in fast_functions} == REGISTERED
    for fast in fast_functions:
        module = sys.modules[fast.__module__]
        caller = getattr(module, fast.__name__)               # what the name now calls
        reference = caller.reference
        assert caller.fast is fast and caller is not fast
        assert reference.__name__ == fast.__name__ + "_reference"
        assert getattr(module, reference.__name__) is reference
        tree = ast.parse(inspect.getsource(module))
        names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert names.index(reference.__name__) == names.index(fast.__name__) - 1, \
            f"{reference.__name__} is not directly above {fast.__name__} in {module.__file__}"


def _run(fn, inputs, reference: bool, seed: int = 7):
    """Outputs of ``fn(*inputs)`` and the gradients of ``sum(out * v)`` (random ``v``) with respect
    to every input, forward and backward both on the fast or both on the reference path."""
    for t in inputs:
        t.grad = None
    with grad.reference_mode(reference):
        outs = fn(*inputs)
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        gen = np.random.default_rng(seed)
        terms = [(o * grad.tensor(gen.normal(size=o.shape))).sum() for o in outs if o.requires_grad]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        total.backward()
    return [o.numpy() for o in outs], [None if t.grad is None else B.to_numpy(t.grad) for t in inputs]


def _leaves(seed, *shapes, lo=-1.5, hi=1.5):
    rng = np.random.default_rng(seed)
    return [grad.tensor(rng.uniform(lo, hi, s), requires_grad=True) for s in shapes]


def _case_cross_entropy(reduction, smoothing):
    target = np.array([1, 3, 0, 3, 2, 4])
    def fn(logits):
        return F.cross_entropy(logits, grad.tensor(target), ignore_index=3, reduction=reduction,
                               label_smoothing=smoothing)
    return fn, _leaves(1, (6, 5), lo=-4, hi=4)


def _case_slices():
    def fn(x):                                 # several slices of one tensor, plus a plain use
        steps = [x[:, t] * float(t + 1) for t in range(x.shape[1])]
        return grad.stack(steps, dim=0).sum(0) + x[None, 1:3, ::2].sum((0, 2)).sum() + x.sum(1)
    return fn, _leaves(2, (4, 6))


def _case_lstm_step(masked):
    mask = np.array([[1.0], [0.0], [1.0]]) if masked else None
    def fn(x_gates, state, w_hh):
        return F.lstm_step(x_gates, state, w_hh, None if mask is None else grad.tensor(mask).data)
    return fn, _leaves(3, (3, 16), (3, 8), (16, 4))


def _case_lstm_layer(masked, reverse):
    """Three steps of a layer with H = 2 on a batch of 3; masked: lengths 3, 1 and 0."""
    lengths = np.array([3, 1, 0])
    mask = (np.arange(3)[:, None] < lengths[None, :]).astype(float)[:, :, None] if masked else None
    def fn(x_gates, state, w_hh):
        return F.lstm_layer(x_gates, state, w_hh, None if mask is None else grad.tensor(mask).data,
                            reverse=reverse)
    return fn, _leaves(10, (3, 3, 8), (3, 4), (8, 2))


def _case_lstm_cell():
    return (lambda x, h, c, w_ih, w_hh, b_ih, b_hh: F.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh),
            _leaves(4, (3, 5), (3, 4), (3, 4), (16, 5), (16, 4), (16,), (16,)))


def _case_attention():
    pad = np.array([[False, False, False, True], [False, False, False, False]])
    def fn(q1, q2, mem):                       # two steps on one memory, and plain uses of it
        c1, w1 = F.attention_lookup(q1, mem, B.from_numpy(pad))
        c2, _ = F.attention_lookup(q2, mem)
        return c1 + mem.sum(1), c2 * 2.0 + grad.tanh(mem).mean(1), w1
    return fn, _leaves(5, (2, 3), (2, 3), (2, 4, 3))


def _case_recurrent_weight():
    def fn(x, w, b):                           # one weight used at every step: factored sums
        h, outs = x[:, 0], []
        for t in range(3):
            h = grad.tanh(F.linear(h, w, b) + x[:, t])
            outs.append(h)
        return grad.stack(outs, dim=1)
    return fn, _leaves(6, (2, 3, 4), (4, 4), (4,))


def _case_multi_head_attention(packed):
    """Self-attention on packed q|k|v with a causal mask and dropout, or cross-attention (q, and
    k|v packed) with a padding mask: 2 heads of width 2."""
    gen_seed = 13
    if packed:
        def fn(qkv):
            return F.multi_head_attention(qkv, None, 2, attn_mask=grad.tensor(np.tril(np.ones((3, 3), bool))),
                                          dropout_p=0.25, generator=grad.Generator(gen_seed))
        return fn, _leaves(8, (2, 3, 12))
    allowed = np.array([True, True, False, True])[None, None, None, :]          # (1, 1, 1, S)
    def fn(q, kv):
        return F.multi_head_attention(q, kv, 2, attn_mask=grad.tensor(allowed))
    return fn, _leaves(9, (2, 3, 4), (2, 4, 8))


PAIR_CASES = {
    "softmax": lambda: (lambda x: F.softmax(x, dim=1), _leaves(0, (3, 5), lo=-5, hi=5)),
    "log_softmax": lambda: (lambda x: F.log_softmax(x, dim=-1), _leaves(0, (2, 3, 4), lo=-5, hi=5)),
    "cross_entropy-mean": lambda: _case_cross_entropy("mean", 0.0),
    "cross_entropy-sum-smoothed": lambda: _case_cross_entropy("sum", 0.2),
    "cross_entropy-none-smoothed": lambda: _case_cross_entropy("none", 0.1),
    "linear": lambda: (lambda x, w, b: F.linear(x, w, b), _leaves(1, (2, 3, 4), (5, 4), (5,))),
    "linear-no-bias": lambda: (lambda x, w: F.linear(x, w), _leaves(1, (3, 4), (5, 4))),
    "getitem": _case_slices,
    "lstm_step": lambda: _case_lstm_step(False),
    "lstm_step-masked": lambda: _case_lstm_step(True),
    "lstm_cell": _case_lstm_cell,
    "lstm_layer": lambda: _case_lstm_layer(False, False),
    "lstm_layer-masked-reverse": lambda: _case_lstm_layer(True, True),
    "attention_lookup": _case_attention,
    "accumulate-recurrent-weight": _case_recurrent_weight,
    "layer_norm": lambda: (lambda x, w, b: F.layer_norm(x, 4, w, b), _leaves(2, (2, 3, 4), (4,), (4,))),
    "scaled_dot_product_attention": lambda: (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, need_weights=True),
        _leaves(3, (2, 3, 4), (2, 3, 4), (2, 3, 5))),
    "multi_head_attention-self-causal-dropout": lambda: _case_multi_head_attention(True),
    "multi_head_attention-cross-padding": lambda: _case_multi_head_attention(False),
}


@backends
@pytest.mark.parametrize("case", sorted(PAIR_CASES))
def test_each_reference_equals_its_fast_twin_and_passes_gradcheck(backend, case):
    """Values and gradients of every input agree to 1e-10 in float64 between the fast path and
    the reference path (forward and backward in reference mode), and finite differences confirm
    the reference's gradients."""
    with B.use(backend):
        fn, inputs = PAIR_CASES[case]()
        fast_out, fast_grads = _run(fn, inputs, reference=False)
        ref_out, ref_grads = _run(fn, inputs, reference=True)
        for a, b in zip(fast_out, ref_out):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        for a, b in zip(fast_grads, ref_grads):
            assert a is not None and b is not None
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        def differentiable(*ts):                  # outputs without gradient (weights) left out
            outs = fn(*ts)
            return tuple(o for o in (outs if isinstance(outs, tuple) else (outs,)) if o.requires_grad)
        with grad.reference_mode():
            assert grad.gradcheck(differentiable, inputs)


@backends
@pytest.mark.parametrize("needs", ["query", "key_value"])
def test_cross_attention_gives_only_the_gradients_asked_for(backend, needs):
    """The fused cross-attention writes each gradient into its own packed buffer; when only the
    queries (or only the keys and values) require a gradient, that one still equals the
    reference's and the other stays None."""
    rng = np.random.default_rng(11)
    q_np, kv_np = rng.uniform(-1.5, 1.5, (2, 3, 4)), rng.uniform(-1.5, 1.5, (2, 5, 8))
    with B.use(backend):
        results = []
        for reference in (False, True):
            q = grad.tensor(q_np, requires_grad=needs == "query")
            kv = grad.tensor(kv_np, requires_grad=needs == "key_value")
            _, grads = _run(lambda a, b: F.multi_head_attention(a, b, 2), [q, kv], reference)
            results.append(grads)
        (fast_q, fast_kv), (ref_q, ref_kv) = results
        asked, other = (fast_q, fast_kv) if needs == "query" else (fast_kv, fast_q)
        assert other is None and asked is not None
        np.testing.assert_allclose(asked, ref_q if needs == "query" else ref_kv, rtol=1e-10, atol=1e-12)


@backends
def test_topk_pair_selects_the_same_entries_in_the_same_order(backend):
    """``topk`` (a partition, then a sort of the k kept, on NumPy) against ``topk_reference``
    (a stable sort of the whole dim): the same indices and values, for rows with many ties
    (small integers), -inf entries (forbidden tokens), a NaN, k from 0 to the whole row, along
    either dim, largest and smallest; and beam search's size, (64, 5000) with k = 10."""
    rng = np.random.default_rng(3)
    cases = []
    for trial in range(60):
        n, rows = int(rng.integers(1, 30)), int(rng.integers(1, 4))
        d = rng.integers(-3, 4, (rows, n)).astype(np.float64) if trial % 2 \
            else rng.normal(size=(rows, n))
        if trial % 5 == 0:
            d[rng.random(d.shape) < 0.3] = -np.inf
        if trial % 7 == 0:
            d[0, 0] = np.nan
        cases.append((d, int(rng.integers(0, n + 1)), 1))
    cases.append((rng.integers(0, 3, (9, 2)).astype(np.float32), 4, 0))
    cases.append((rng.normal(size=(64, 5000)).astype(np.float32), 10, 1))
    with B.use(backend):
        for d, k, dim in cases:
            x = grad.tensor(d)
            for largest in (True, False):
                fast = grad.ops.topk(x, k, dim=dim, largest=largest)
                ref = grad.ops.topk_reference(x, k, dim=dim, largest=largest)
                np.testing.assert_array_equal(fast.indices.numpy(), ref.indices.numpy())
                np.testing.assert_array_equal(fast.values.numpy(), ref.values.numpy())
        with pytest.raises(ValueError, match="topk: k must be between 0 and"):
            grad.ops.topk(grad.tensor(np.zeros((2, 3))), 4, dim=1)


@backends
def test_accumulate_pair_on_dense_and_mixed_precision_gradients(backend):
    with B.use(backend):
        rng = np.random.default_rng(0)
        parts = [B.from_numpy(rng.normal(size=(3, 4))) for _ in range(3)]          # float64
        for tensor in (grad.tensor(np.zeros((3, 4)), requires_grad=True),
                       grad.tensor(np.zeros((3, 4), np.float32), requires_grad=True)):
            fast = acc.accumulate.fast(list(parts), tensor)
            slow = acc.accumulate_reference(list(parts), tensor)
            assert fast.dtype == slow.dtype == tensor.dtype
            np.testing.assert_allclose(B.to_numpy(fast), B.to_numpy(slow), rtol=1e-6)
            single = acc.accumulate.fast([parts[0]], tensor)                 # a leaf's own copy
            assert single is not parts[0]
        b = grad.tensor(np.ones(3), requires_grad=True)
        c = grad.tensor(np.ones(3), requires_grad=True)
        (b + c).sum().backward()                    # add sends one array to both leaves
        assert b.grad is not c.grad


@backends
def test_adam_update_pair_gives_the_same_parameters_and_state(backend):
    with B.use(backend):
        runs = []
        for reference in (False, True):
            rng = np.random.default_rng(0)
            params = [grad.tensor(rng.normal(size=(3, 4)), requires_grad=True),
                      grad.tensor(rng.normal(size=(4,)), requires_grad=True)]
            opt = optim.Adam(params, lr=0.01, weight_decay=0.1)
            for _ in range(3):
                for p in params:
                    p.grad = B.from_numpy(rng.normal(size=p.shape))
                with grad.reference_mode(reference):
                    opt.step()
            runs.append([p.numpy() for p in params]
                        + [B.to_numpy(s[k]) for s in opt.state for k in ("exp_avg", "exp_avg_sq")])
        for a, b in zip(*runs):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


# ================================================================ the trace: no fast path entered
def _nested_code(code):
    """``code`` and every code object defined inside it (its backward closures, lambdas)."""
    found = [code]
    for const in code.co_consts:
        if inspect.iscode(const):
            found += _nested_code(const)
    return found


FAST_CODE = {c for f in fused_functions() for c in _nested_code(f.__code__)}
ACCUMULATE_FILE = acc.__file__
ALLOWED_IN_ACCUMULATE = {acc.accumulate_reference.__code__}


def _small_training_step():
    """One training step of a tiny attention model: an LSTM layer over a padded source (its
    ``lstm_layer``; its reference, ``lstm_step`` per step), an attention lookup, an LSTM cell (its
    ``lstm_step``) and a step of ``lstm_step`` called directly, linear layers, slices, cross-entropy,
    backward, clipping and an Adam step. Returns the loss, the gradients and the new parameters."""
    gen = grad.Generator(0)
    rnn = nn.LSTM(3, 4, batch_first=True, generator=gen, dtype="float64")
    query = nn.Linear(4, 4, generator=gen, dtype="float64")
    cell = nn.LSTMCell(4, 4, generator=gen, dtype="float64")
    out = nn.Linear(4, 6, generator=gen, dtype="float64")
    params = list(rnn.parameters()) + list(query.parameters()) + list(cell.parameters()) \
        + list(out.parameters())
    opt = optim.Adam(params, lr=0.01)
    x = grad.tensor(np.random.default_rng(1).normal(size=(2, 5, 3)))
    lengths = grad.tensor(np.array([5, 3]))
    memory, (h_n, c_n) = rnn(x, lengths=lengths)                          # (2, 5, 4)
    pad = B.from_numpy(np.array([[False] * 5, [False] * 3 + [True] * 2]))
    context, _ = F.attention_lookup(query(h_n[0]), memory, pad)           # (2, 4)
    h, c = cell(context, (h_n[0], c_n[0]))
    # a second step as the seq2seq decoder's fast path takes it: lstm_step on the packed state
    state = F.lstm_step(F.linear(h, cell.weight_ih, cell.bias_ih), grad.cat([h, c], dim=1),
                        cell.weight_hh)                                   # (2, 8)
    h = state[:, :4]
    logits = out(grad.stack([h, memory[:, 0]], dim=1).reshape(4, 4))      # (4, 6)
    loss = F.cross_entropy(logits, grad.tensor(np.array([1, 0, 5, 2])), ignore_index=0,
                           label_smoothing=0.1)
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item(), [B.to_numpy(p.grad) for p in params], [p.numpy() for p in params]


def _traced(fn):
    """Run ``fn`` under ``sys.setprofile``; return its result and the code objects entered."""
    entered = set()
    def profile(frame, event, arg):
        if event == "call":
            entered.add(frame.f_code)
    sys.setprofile(profile)
    try:
        result = fn()
    finally:
        sys.setprofile(None)
    return result, entered


@backends
def test_a_training_step_in_reference_mode_enters_no_fast_path_and_no_bookkeeping(backend):
    """"Fast path": a function in ``grad.modes.fused_functions()`` or any function defined inside
    one (its backward). "Bookkeeping": any code of ``grad/accumulate.py`` other than
    ``accumulate_reference``, the plain dense sum (so neither the fast ``accumulate`` nor
    ``SliceGrad``, ``MatmulGrad``, ``OuterGrad`` and their ``dense``/``merge``). The dispatching
    caller in ``grad/modes.py`` and everything else (ops, the sweep) may run. Outside reference
    mode the same step must enter the fast twins, or this test could not fail."""
    with B.use(backend):
        ref_result, ref_entered = _traced(lambda: grad.reference_mode()(_small_training_step)())
        fast_result, fast_entered = _traced(_small_training_step)

    def names(codes):
        return sorted(f"{c.co_filename.rsplit('/', 1)[-1]}:{c.co_name}" for c in codes)
    bookkeeping = {c for c in ref_entered
                   if c.co_filename == ACCUMULATE_FILE and c not in ALLOWED_IN_ACCUMULATE}
    assert not ref_entered & FAST_CODE, names(ref_entered & FAST_CODE)
    assert not bookkeeping, names(bookkeeping)
    used = {"lstm_layer", "lstm_step", "attention_lookup", "lstm_cell", "linear", "getitem",
            "cross_entropy", "accumulate", "adam_step", "clip_gradients"}          # Adam on its flat buffer
    fast = {f.__code__ for f in fused_functions() if f.__name__ in used}
    reference = {getattr(sys.modules[f.__module__], f.__name__).reference.__code__
                 for f in fused_functions() if f.__name__ in used}
    assert len(fast) == len(used)
    assert fast <= fast_entered, names(fast - fast_entered)
    assert reference <= ref_entered, names(reference - ref_entered)
    assert not reference & fast_entered, names(reference & fast_entered)
    assert {acc.MatmulGrad.dense.__code__, acc.OuterGrad.dense.__code__} <= fast_entered
    # the two paths compute the same step
    assert ref_result[0] == pytest.approx(fast_result[0], rel=1e-12)
    for a, b in zip(ref_result[1] + ref_result[2], fast_result[1] + fast_result[2]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@backends
def test_a_search_in_reference_mode_enters_no_fast_path(backend):
    """Greedy and beam search of a tiny seq2seq model: in reference mode no fast function runs
    (the encoder and the decoder step are what training runs); outside it the inference paths
    ``encoder_lstm`` and ``decoder_step`` do, and both give the same tokens."""
    from minis2s.models import Seq2Seq
    with B.use(backend):
        model = Seq2Seq(9, 8, emb_size=4, hidden_size=6, num_layers=2, dropout=0.0,
                        generator=grad.Generator(0)).to("float64")
        src, lengths = np.array([[4, 5, 6], [7, 3, 0]]), np.array([3, 2])

        def search():
            return (model.greedy(src, lengths, max_len=4).tokens,
                    model.beam_search(src, lengths, beam_size=2, max_len=4).tokens)
        ref_tokens, ref_entered = _traced(grad.reference_mode()(search))
        fast_tokens, fast_entered = _traced(search)
    assert not ref_entered & FAST_CODE
    for step in (minis2s.models.decoder.decoder_step, minis2s.models.encoder.encoder_lstm):
        assert step.fast.__code__ in fast_entered and step.reference.__code__ not in fast_entered
        assert step.reference.__code__ in ref_entered
    for a, b in zip(ref_tokens, fast_tokens):
        np.testing.assert_array_equal(a, b)


# ================================================================ one fused function at a time
def test_only_swaps_the_named_functions_and_restores_the_state():
    rng = np.random.default_rng(0)
    x = grad.tensor(rng.normal(size=(2, 3, 4)), requires_grad=True)
    w = grad.tensor(rng.normal(size=(4,)), requires_grad=True)
    assert grad.modes.reference_functions() == ()
    with grad.reference_mode(only={"layer_norm"}):
        assert grad.modes.reference_functions() == ("layer_norm",)
        assert grad.is_reference_mode() is False              # only full mode says True
        y = F.layer_norm(x, 4, w)
        a = F.scaled_dot_product_attention(x, x, x, is_causal=True)
        with grad.reference_mode():                           # a full block inside: all swapped
            assert set(grad.modes.reference_functions()) == {f.__name__ for f in fused_functions()}
        with grad.reference_mode(False):                      # and an off block: none
            assert grad.modes.reference_functions() == ()
        assert grad.modes.reference_functions() == ("layer_norm",)
    assert grad.modes.reference_functions() == () and grad.is_reference_mode() is False
    assert "layer_norm" not in graph_ops(y)                  # the reference ran
    assert a._op == "scaled_dot_product_attention"            # the other stayed fast
    np.testing.assert_allclose(y.numpy(), F.layer_norm(x, 4, w).numpy(), rtol=1e-12, atol=1e-14)
    with grad.reference_mode(only=["grad.functional.softmax", "cross_entropy"]):   # qualified names
        assert set(grad.modes.reference_functions()) == {"softmax", "cross_entropy"}
    with pytest.raises(KeyError):
        with grad.reference_mode(only="softmax"):             # one name as a plain string
            assert grad.modes.reference_functions() == ("softmax",)
            raise KeyError("an error inside the block")
    assert grad.modes.reference_functions() == ()

    @grad.reference_mode(only={"linear"})
    def inside():
        return grad.modes.reference_functions()
    assert inside() == ("linear",) and grad.modes.reference_functions() == ()


def test_only_refuses_unknown_names_and_choices_that_break_a_fast_twin():
    with pytest.raises(ValueError, match="no fused function named 'softmx'.*known: .*softmax"):
        grad.reference_mode(only={"softmx"})
    with pytest.raises(ValueError, match="needs enabled=True"):
        grad.reference_mode(False, only={"softmax"})
    needers = grad.modes.requirers("accumulate")
    assert set(needers) == {"linear", "lstm_step", "attention_lookup", "getitem"}
    with pytest.raises(ValueError, match="accumulate cannot run its reference while "
                                         "attention_lookup, getitem, linear, lstm_step run"):
        grad.reference_mode(only={"accumulate"})
    with pytest.raises(ValueError, match="while getitem runs fast"):
        grad.reference_mode(only={"accumulate", "linear", "lstm_step", "attention_lookup"})
    with grad.reference_mode(only={"accumulate", *needers}):
        assert set(grad.modes.reference_functions()) == {"accumulate", *needers}
    for fast in fused_functions():                            # every declared need is a fused name
        for name in grad.modes._requires[fast]:
            assert name in {f.__name__ for f in fused_functions()}, (fast.__name__, name)


STEP_FUSED = ("lstm_layer", "lstm_step", "attention_lookup", "lstm_cell", "linear", "getitem", "cross_entropy",
              "accumulate", "adam_step", "clip_gradients")


@backends
@pytest.mark.parametrize("name", STEP_FUSED)
def test_a_training_step_with_one_function_swapped_runs_its_reference_alone(backend, name):
    """The small training step with one fused function on its reference (``accumulate`` with the
    functions that need it): that reference runs and its fast twin does not, every other fast
    twin still runs, and the step computes what the fast step computes."""
    only = {name, *grad.modes.requirers(name)}
    with B.use(backend):
        fast_result, _ = _traced(_small_training_step)
        result, entered = _traced(grad.reference_mode(only=only)(_small_training_step))
    callers = {f.__name__: getattr(sys.modules[f.__module__], f.__name__) for f in fused_functions()}
    for other in STEP_FUSED:
        caller = callers[other]
        if other in only:
            assert caller.reference.__code__ in entered and caller.fast.__code__ not in entered, other
        else:
            assert caller.fast.__code__ in entered, other
    assert result[0] == pytest.approx(fast_result[0], rel=1e-12)
    for a, b in zip(result[1] + result[2], fast_result[1] + fast_result[2]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
