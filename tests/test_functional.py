"""``grad.functional``: fused functions against their composed versions, conventions (padding,
ignore_index, label smoothing, dropout), numerical stability, and PyTorch as an optional oracle."""
import numpy as np
import pytest

import grad
import grad.functional as F
from grad import backend as B
from helpers import backends


def host(a):
    return B.to_numpy(a)


def leaf(shape, lo=-2.0, hi=2.0, seed=0):
    return grad.tensor(np.random.default_rng(seed).uniform(lo, hi, shape), requires_grad=True)


def grads_of(fn, inputs, cotangent_seed=5):
    """Gradients of sum(fn(*inputs) * v) for a fixed random v, as host arrays."""
    for t in inputs:
        t.grad = None
    out = fn(*inputs)
    v = np.random.default_rng(cotangent_seed).normal(size=out.shape)
    (out * grad.tensor(v)).sum().backward()
    return host(out.data), [host(t.grad) for t in inputs]


# ------------------------------------------------------------------------- cross-entropy
@backends
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_is_fused_log_softmax_plus_nll(backend, reduction):
    with B.use(backend):
        logits = leaf((5, 4))
        target = grad.tensor(np.array([1, 3, 0, 3, 2]))
        for ignore in (-100, 3):
            fused = grads_of(lambda x: F.cross_entropy(x, target, ignore_index=ignore,
                                                       reduction=reduction), [logits])
            composed = grads_of(lambda x: F.nll_loss(F.log_softmax(x, dim=1), target,
                                                     ignore_index=ignore, reduction=reduction), [logits])
            np.testing.assert_allclose(fused[0], composed[0], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(fused[1][0], composed[1][0], rtol=1e-12, atol=1e-14)


@backends
def test_cross_entropy_ignored_rows_and_label_smoothing(backend):
    with B.use(backend):
        logits = leaf((3, 4))
        target = grad.tensor(np.array([2, -100, 1]))
        loss = F.cross_entropy(logits, target, reduction="none", label_smoothing=0.2)
        assert loss.numpy()[1] == 0.0
        F.cross_entropy(logits, target, label_smoothing=0.2).backward()
        g = host(logits.grad)
        np.testing.assert_array_equal(g[1], 0.0)                     # ignored row: no gradient
        np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-12)   # p - q sums to zero per row
        # label_smoothing = 1 targets the uniform distribution: the loss is minimal at equal logits
        flat = grad.tensor(np.zeros((2, 4)), requires_grad=True)
        F.cross_entropy(flat, grad.tensor(np.array([0, 3])), label_smoothing=1.0).backward()
        np.testing.assert_allclose(host(flat.grad), 0.0, atol=1e-15)
        with pytest.raises(ValueError, match="label_smoothing"):
            F.cross_entropy(logits, target, label_smoothing=1.5)
        with pytest.raises(ValueError, match="reduction"):
            F.cross_entropy(logits, target, reduction="avg")
        with pytest.raises(ValueError, match="expects input"):
            F.cross_entropy(logits, grad.tensor(np.array([1, 2])))


@backends
def test_extreme_logits_are_stable_in_float32(backend):
    with B.use(backend):
        raw = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [5e3, 1e4, 1e4]], dtype=np.float32)
        target = grad.tensor(np.array([0, 1, 2]))
        for fn in (lambda x: F.softmax(x, -1), lambda x: F.log_softmax(x, -1),
                   lambda x: F.cross_entropy(x, target), lambda x: F.cross_entropy(x, target, label_smoothing=0.1)):
            x = grad.tensor(raw, requires_grad=True)
            out = fn(x)
            assert B.dtype_name(out.dtype) == "float32"
            assert np.all(np.isfinite(out.numpy()))
            out.backward(grad.tensor(np.ones(out.shape, np.float32)))
            assert np.all(np.isfinite(host(x.grad)))
        p = F.softmax(grad.tensor(raw), -1).numpy()
        np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0, 0.5, 0.5]], atol=1e-6)
        lp = F.log_softmax(grad.tensor(raw), -1).numpy()
        np.testing.assert_allclose(lp[0], [0.0, -2e4, -1e4], rtol=1e-6)


# ----------------------------------------------------------------------------- embedding
@backends
def test_embedding_accumulates_and_skips_padding(backend):
    with B.use(backend):
        w = grad.tensor(np.arange(8.0).reshape(4, 2), requires_grad=True)
        ids = grad.tensor(np.array([[1, 0, 1], [3, 1, 0]]))
        out = F.embedding(ids, w, padding_idx=0)
        assert out.shape == (2, 3, 2)
        np.testing.assert_array_equal(out.numpy()[0, 1], [0.0, 1.0])     # the lookup itself is plain
        out.backward(grad.tensor(np.ones((2, 3, 2))))
        np.testing.assert_array_equal(host(w.grad), [[0, 0], [3, 3], [0, 0], [1, 1]])
        w.grad = None
        F.embedding([2, 2, 2], w).sum().backward()                         # plain lists work too
        np.testing.assert_array_equal(host(w.grad), [[0, 0], [0, 0], [3, 3], [0, 0]])


# ------------------------------------------------------------------------------- dropout
@backends
def test_dropout(backend):
    with B.use(backend):
        x = grad.tensor(np.ones((40, 50)), requires_grad=True)
        assert F.dropout(x, 0.5, training=False) is x
        assert F.dropout(x, 0.0) is x
        a = F.dropout(x, 0.3, generator=grad.Generator(5)).numpy()
        b = F.dropout(x, 0.3, generator=grad.Generator(5)).numpy()
        np.testing.assert_array_equal(a, b)                              # same seed, same mask
        assert set(np.unique(a).tolist()) == {0.0, np.float64(1 / 0.7)}   # kept ones scaled by 1/(1-p)
        assert abs((a == 0).mean() - 0.3) < 0.05
        y = F.dropout(x, 0.3, generator=grad.Generator(5))
        y.backward(grad.tensor(np.ones((40, 50))))
        np.testing.assert_array_equal(host(x.grad), a)                   # gradient through the same mask
        x.grad = None
        z = F.dropout(x, 1.0)
        assert not z.numpy().any()
        z.sum().backward()
        assert not host(x.grad).any()
        with pytest.raises(ValueError, match="probability"):
            F.dropout(x, 1.5)


# -------------------------------------------------------------------------- linear, mse
@backends
def test_linear_equals_the_composed_product(backend):
    with B.use(backend):
        x, w, b = leaf((2, 3, 4)), leaf((5, 4), seed=1), leaf((5,), seed=2)
        fused = grads_of(lambda x, w, b: F.linear(x, w, b), [x, w, b])
        composed = grads_of(lambda x, w, b: x @ w.transpose(0, 1) + b, [x, w, b])
        np.testing.assert_allclose(fused[0], composed[0], rtol=1e-12)
        for g1, g2 in zip(fused[1], composed[1]):
            np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-14)
        nobias = grads_of(lambda x, w: F.linear(x, w), [x, w])
        np.testing.assert_allclose(nobias[0], host((x @ w.T).data), rtol=1e-12)


@backends
def test_mse_loss_values(backend):
    with B.use(backend):
        a = grad.tensor(np.array([1.0, 2.0, 4.0]), requires_grad=True)
        t = np.array([0.0, 2.0, 1.0])
        assert F.mse_loss(a, grad.tensor(t)).item() == pytest.approx(10.0 / 3)
        assert F.mse_loss(a, grad.tensor(t), reduction="sum").item() == pytest.approx(10.0)
        np.testing.assert_array_equal(F.mse_loss(a, grad.tensor(t), reduction="none").numpy(), [1, 0, 9])
        F.mse_loss(a, grad.tensor(t)).backward()
        np.testing.assert_allclose(host(a.grad), [2 / 3, 0.0, 2.0])


# ----------------------------------------------------------------------------- attention
def _composed_attention(q, mem, pad):
    scores = (mem @ q.unsqueeze(2)).squeeze(2)                           # (B, S)
    if pad is not None:
        scores = scores.masked_fill(pad, -1e30)
    a = F.softmax(scores, dim=1)
    return (a.unsqueeze(1) @ mem).squeeze(1)                             # (B, H)


@backends
def test_attention_lookup_matches_the_composed_version(backend):
    with B.use(backend):
        q1, q2 = leaf((2, 3), seed=1), leaf((2, 3), seed=2)
        mem = leaf((2, 4, 3), seed=3)
        pad = grad.tensor(np.array([[False, False, False, True], [False, False, False, False]]))

        def fused(q1, q2, mem):
            # two decoder steps on the same memory (their factored gradients merge), and plain
            # uses of the memory before and after them (dense gradients mixed with factored ones)
            before = mem.sum(1)
            c1, w1 = F.attention_lookup(q1, mem, pad.data)
            c2, _ = F.attention_lookup(q2, mem, pad.data)
            c3, _ = F.attention_lookup(q2 * 0.5, mem)                      # no padding mask
            assert not w1.requires_grad
            np.testing.assert_allclose(w1.numpy().sum(1), 1.0)
            assert w1.numpy()[0, 3] == 0.0
            return grad.cat([c1 + before, c2 * 2.0 + grad.tanh(mem).mean(1), c3], dim=1)

        def composed(q1, q2, mem):
            before = mem.sum(1)
            c1 = _composed_attention(q1, mem, pad)
            c2 = _composed_attention(q2, mem, pad)
            c3 = _composed_attention(q2 * 0.5, mem, None)
            return grad.cat([c1 + before, c2 * 2.0 + grad.tanh(mem).mean(1), c3], dim=1)

        a, b = grads_of(fused, [q1, q2, mem]), grads_of(composed, [q1, q2, mem])
        np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
        for g1, g2 in zip(a[1], b[1]):
            np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-12)
        assert grad.gradcheck(fused, [q1, q2, mem])


# ------------------------------------------------------------------------ PyTorch oracle
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_torch(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)) * 3
    target = np.array([1, 4, 0, 2, 2, 3])
    for ignore in (-100, 2):
        for smoothing in (0.0, 0.1, 0.35):
            tl = torch.tensor(logits, requires_grad=True)
            ref = torch.nn.functional.cross_entropy(tl, torch.tensor(target), ignore_index=ignore,
                                                    reduction=reduction, label_smoothing=smoothing)
            v = rng.normal(size=ref.shape)
            (ref * torch.tensor(v)).sum().backward()
            gl = grad.tensor(logits, requires_grad=True)
            out = F.cross_entropy(gl, grad.tensor(target), ignore_index=ignore, reduction=reduction,
                                  label_smoothing=smoothing)
            (out * grad.tensor(v)).sum().backward()
            np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(gl.grad, tl.grad.numpy(), rtol=1e-10, atol=1e-12)
        lp = torch.log_softmax(torch.tensor(logits), 1)
        ref = torch.nn.functional.nll_loss(lp, torch.tensor(target), ignore_index=ignore, reduction=reduction)
        out = F.nll_loss(grad.tensor(lp.numpy()), grad.tensor(target), ignore_index=ignore, reduction=reduction)
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12)


@backends
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_backward_twice_with_retained_graph_gives_the_same_gradient(backend, label_smoothing):
    # The fused backward reuses its saved softmax as the gradient buffer, but only when the graph
    # is freed afterwards; with retain_graph=True the second backward must see the same numbers.
    with B.use(backend):
        gen = grad.Generator(3)
        logits = grad.randn(5, 7, generator=gen, requires_grad=True)
        target = grad.tensor(B.to_numpy(B.asarray([1, 0, 6, 0, 3], "int64")))
        loss = F.cross_entropy(logits, target, ignore_index=0, label_smoothing=label_smoothing)
        loss.backward(retain_graph=True)
        first = B.to_numpy(logits.grad).copy()
        logits.grad = None
        loss.backward()
        np.testing.assert_array_equal(B.to_numpy(logits.grad), first)
        assert np.all(first[[1, 3]] == 0.0)                 # ignored rows get no gradient


@backends
@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax], ids=["softmax", "log_softmax"])
def test_softmax_axis_is_an_alias_of_dim(backend, fn):
    """``dim`` defaults to -1; ``axis=`` is its NumPy spelling (it used to collide with the
    default ``dim=-1`` and always raise); giving both is an error."""
    x_host = np.random.default_rng(0).uniform(-3.0, 3.0, (3, 4, 5))
    with B.use(backend):
        x = grad.tensor(x_host)
        for d in (0, 1, -1):
            np.testing.assert_array_equal(fn(x, axis=d).numpy(), fn(x, dim=d).numpy())
            np.testing.assert_array_equal(fn(x, axis=d).numpy(), fn(x, d).numpy())
        np.testing.assert_array_equal(fn(x).numpy(), fn(x, dim=2).numpy())     # default: the last
        e = np.exp(x_host - x_host.max(axis=0, keepdims=True))
        ref = e / e.sum(axis=0, keepdims=True)
        ref = ref if fn is F.softmax else np.log(ref)
        np.testing.assert_allclose(fn(x, axis=0).numpy(), ref, rtol=1e-12, atol=1e-12)
        with pytest.raises(TypeError, match="not both"):
            fn(x, dim=0, axis=0)
        with pytest.raises(TypeError, match="not both"):
            fn(x, -1, axis=-1)
