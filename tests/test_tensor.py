"""Tensor basics: dtype rules, conversions, grad mode, the backward sweep (accumulation, freeing,
deep graphs), and exact gradients at kinks and for reused tensors."""
import numpy as np
import pytest

import grad
import grad.functional as F
from grad import backend as B
from helpers import backends


def host(a):
    return B.to_numpy(a)


# ------------------------------------------------------------------------------ dtypes
@backends
def test_dtype_rules(backend):
    with B.use(backend):
        assert B.dtype_name(grad.tensor(1.5).dtype) == "float32"            # Python float
        assert B.dtype_name(grad.tensor([1.0, 2.0]).dtype) == "float32"
        assert B.dtype_name(grad.tensor(3).dtype) == "int64"                # Python int
        assert B.dtype_name(grad.tensor([[1, 2]]).dtype) == "int64"
        assert B.dtype_name(grad.tensor([True, False]).dtype) == "bool"
        assert B.dtype_name(grad.tensor(np.zeros(2)).dtype) == "float64"    # NumPy keeps its dtype
        assert B.dtype_name(grad.tensor(np.zeros(2, np.float32)).dtype) == "float32"
        assert B.dtype_name(grad.tensor(np.float64(2.0)).dtype) == "float64"
        assert B.dtype_name(grad.tensor([1.0], dtype="float64").dtype) == "float64"
        assert B.dtype_name(grad.tensor([1, 2], dtype=grad.float32).dtype) == "float32"
        assert grad.tensor(np.zeros(2)).dtype == grad.float64
        assert B.is_array(grad.tensor([1.0]).data)
        with pytest.raises(TypeError, match="floating"):
            grad.tensor([1, 2], requires_grad=True)


@backends
def test_scalars_keep_the_tensor_dtype(backend):
    with B.use(backend):
        x = grad.tensor([1.0, 2.0], requires_grad=True)                    # float32
        y = (2.5 * x + 1) / 3.0 - 0.5 ** x + (1.0 - x) * x ** 2
        assert B.dtype_name(y.dtype) == "float32"
        y.sum().backward()
        assert B.dtype_name(x.grad.dtype) == "float32"


@backends
def test_mixed_precision_gradients_keep_each_inputs_dtype(backend):
    with B.use(backend):
        a = grad.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
        b = grad.tensor(np.array([3.0, 4.0]), requires_grad=True)         # float64
        out = a * b + a                                                    # a is used twice
        assert B.dtype_name(out.dtype) == "float64"
        out.sum().backward()
        assert B.dtype_name(a.grad.dtype) == "float32"
        assert B.dtype_name(b.grad.dtype) == "float64"
        np.testing.assert_allclose(host(a.grad), [4.0, 5.0])
        np.testing.assert_allclose(host(b.grad), [1.0, 2.0])
        s32 = grad.tensor(np.float32(2.0), requires_grad=True)             # 0-d, through a sum
        (s32 * b).sum().backward()
        assert B.dtype_name(s32.grad.dtype) == "float32" and float(host(s32.grad)) == 7.0


@backends
def test_factories(backend):
    with B.use(backend):
        z = grad.zeros(2, 3)
        assert z.shape == (2, 3) and B.dtype_name(z.dtype) == "float32" and not z.numpy().any()
        assert grad.ones((2,), dtype="float64").numpy().tolist() == [1.0, 1.0]
        assert grad.full((2,), 7, dtype="int64").numpy().tolist() == [7, 7]
        assert grad.arange(1, 7, 2).numpy().tolist() == [1, 3, 5]
        assert B.dtype_name(grad.arange(3).dtype) == "int64"
        like = grad.tensor(np.ones((2, 2)))
        assert grad.zeros_like(like).shape == (2, 2) and B.dtype_name(grad.ones_like(like).dtype) == "float64"
        assert grad.zeros(3, requires_grad=True).requires_grad
        a = grad.randn(3, 4, generator=grad.Generator(0)).numpy()
        np.testing.assert_array_equal(a, grad.randn((3, 4), generator=grad.Generator(0)).numpy())
        r = grad.rand(1000, generator=grad.Generator(1), dtype="float64").numpy()
        assert r.dtype == np.float64 and 0.0 <= r.min() and r.max() < 1.0
        assert grad.tensor(grad.tensor([1.0, 2.0])).shape == (2,)
        for made in (z, like, grad.arange(3)):
            assert B.is_array(made.data)


# ------------------------------------------------------------------------------ conversions
@backends
def test_item_numpy_tolist_detach(backend):
    with B.use(backend):
        x = grad.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
        s = (x * 2).sum()
        assert isinstance(s.item(), float) and s.item() == 20.0
        assert grad.tensor([7]).item() == 7 and isinstance(grad.tensor([7]).item(), int)
        with pytest.raises(ValueError, match="one element"):
            x.item()
        arr = x.numpy()
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
        np.testing.assert_array_equal(arr, [[1, 2], [3, 4]])
        assert x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
        assert x.shape == (2, 2) and x.ndim == 2 and x.numel() == 4 and len(x) == 2 and x.size(1) == 2
        d = (x * 3).detach()
        assert not d.requires_grad and d.is_leaf
        np.testing.assert_array_equal(d.numpy(), 3 * arr)
        # gradient does not flow through a detached tensor
        y = (x * d).sum()
        y.backward()
        np.testing.assert_array_equal(host(x.grad), 3 * arr)
        assert "grad_fn" in repr(x * 2) and "requires_grad=True" in repr(x)


@backends
def test_to_dtype_is_differentiable(backend):
    with B.use(backend):
        x = grad.tensor([1.0, -2.0], requires_grad=True)
        y = x.to("float64")
        assert B.dtype_name(y.dtype) == "float64"
        assert x.to("float32") is x
        assert B.dtype_name(x.double().dtype) == "float64"
        assert B.dtype_name(x.double().float().dtype) == "float32"
        assert B.dtype_name(x.to(grad.float64).dtype) == "float64"
        (y * y).sum().backward()
        assert B.dtype_name(x.grad.dtype) == "float32"
        np.testing.assert_array_equal(host(x.grad), [2.0, -4.0])


def test_to_another_backend_copies_the_values():
    x = grad.tensor(np.array([1.5, 2.5]), requires_grad=True)
    y = x.to("array_api_strict")
    assert not isinstance(y.data, np.ndarray)
    assert y.requires_grad
    np.testing.assert_array_equal(y.numpy(), [1.5, 2.5])
    with B.use("array_api_strict"):
        back = y.to("numpy")
    assert isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.numpy(), [1.5, 2.5])


# ------------------------------------------------------------------------------ grad mode
@backends
def test_no_grad_builds_no_graph(backend):
    with B.use(backend):
        x = grad.tensor([1.0, 2.0], requires_grad=True)
        with grad.no_grad():
            assert not grad.is_grad_enabled()
            y = F.softmax(x * 2 + 1, -1)
            with grad.enable_grad():
                assert grad.is_grad_enabled()
                z = x * 2
        assert grad.is_grad_enabled()
        assert not y.requires_grad and y.is_leaf and y._parents == ()
        assert z.requires_grad and not z.is_leaf

        @grad.no_grad()
        def f(t):
            return t * t
        assert not f(x).requires_grad
        with pytest.raises(ZeroDivisionError):
            with grad.no_grad():
                1 / 0
        assert grad.is_grad_enabled()                               # restored after an error


@backends
def test_constants_need_no_grad(backend):
    with B.use(backend):
        c = grad.tensor([1.0, 2.0])
        y = c * 3 + c
        assert not y.requires_grad and y.is_leaf
        with pytest.raises(RuntimeError, match="does not require grad"):
            y.sum().backward()


# ------------------------------------------------------------------------------ backward
@backends
def test_backward_needs_a_gradient_for_non_scalars(backend):
    with B.use(backend):
        x = grad.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = x * 2
        with pytest.raises(RuntimeError, match="non-scalar"):
            y.backward()
        with pytest.raises(ValueError, match="shape"):
            y.backward(grad.tensor([1.0, 1.0]))
        y.backward(grad.tensor([1.0, 0.5, -1.0]))
        np.testing.assert_array_equal(host(x.grad), [2.0, 1.0, -2.0])
        z = x * 3                                                    # a list works too
        z.backward([1.0, 1.0, 1.0])
        np.testing.assert_array_equal(host(x.grad), [5.0, 4.0, 1.0])  # accumulated


@backends
def test_backward_frees_the_graph_unless_retained(backend):
    with B.use(backend):
        x = grad.tensor([1.0, 2.0], requires_grad=True)
        y = (grad.exp(x) * x).sum()
        y.backward(retain_graph=True)
        first = host(x.grad).copy()
        y.backward()                                                  # retained: works, accumulates
        np.testing.assert_allclose(host(x.grad), 2 * first, rtol=1e-6)
        with pytest.raises(RuntimeError, match="retain_graph"):
            y.backward()


@backends
def test_grads_accumulate_across_backward_calls(backend):
    with B.use(backend):
        w = grad.tensor([1.0, 2.0], requires_grad=True)
        for k in range(3):
            (w * float(k + 1)).sum().backward()
        np.testing.assert_array_equal(host(w.grad), [6.0, 6.0])
        w.grad = None
        (w * w).sum().backward()
        np.testing.assert_array_equal(host(w.grad), [2.0, 4.0])


@backends
def test_deep_chain_backward_has_no_recursion_limit(backend):
    with B.use(backend):
        x = grad.tensor(np.array([0.5, -1.0]), requires_grad=True)
        y = x
        n = 10000
        for _ in range(n):
            y = y * 1.0001 + 0.001
        y.sum().backward()
        np.testing.assert_allclose(host(x.grad), [1.0001 ** n] * 2, rtol=1e-10)
        del y                                                          # dropping the graph is fine too


@backends
def test_deep_chain_is_deterministic(backend):
    def run():
        x = grad.tensor(np.linspace(-1, 1, 3), requires_grad=True)
        h = x
        for i in range(2000):
            h = grad.tanh(h * 1.1 + x * 0.01) if i % 2 else h + h * 0.5 - x * 0.1
        h.sum().backward()
        return host(x.grad)
    with B.use(backend):
        a, b = run(), run()
    assert np.array_equal(a, b)


# ------------------------------------------------------------------------------ exact values
@backends
def test_relu_derivative_at_zero_is_zero(backend):
    with B.use(backend):
        x = grad.tensor([-2.0, 0.0, 3.0, -0.0], requires_grad=True)
        y = grad.relu(x)
        np.testing.assert_array_equal(y.numpy(), [0.0, 0.0, 3.0, 0.0])
        y.backward(grad.tensor([5.0, 5.0, 5.0, 5.0]))
        np.testing.assert_array_equal(host(x.grad), [0.0, 0.0, 5.0, 0.0])


@backends
def test_max_ties_split_the_gradient_evenly(backend):
    with B.use(backend):
        x = grad.tensor([1.0, 3.0, 3.0], requires_grad=True)
        m = x.max()
        assert m.item() == 3.0
        m.backward()
        np.testing.assert_array_equal(host(x.grad), [0.0, 0.5, 0.5])
        y = grad.tensor([[2.0, 2.0, 2.0], [0.0, 5.0, 1.0]], requires_grad=True)
        grad.amax(y, dim=1).backward(grad.tensor([3.0, 1.0]))
        np.testing.assert_array_equal(host(y.grad), [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
        z = grad.tensor([[4.0, 1.0], [4.0, 4.0]], requires_grad=True)
        grad.max(z, axis=(0, 1), keepdims=True).backward(grad.tensor([[6.0]]))
        np.testing.assert_array_equal(host(z.grad), [[2.0, 0.0], [2.0, 2.0]])


@backends
def test_reused_tensors_get_every_contribution(backend):
    with B.use(backend):
        x = grad.tensor([1.0, -2.0, 3.0], requires_grad=True)
        (x * x).sum().backward()
        np.testing.assert_array_equal(host(x.grad), [2.0, -4.0, 6.0])

        # one weight used at several steps (as in an unrolled RNN)
        w = grad.tensor([[0.5, -1.0], [2.0, 1.0]], requires_grad=True)
        h = grad.tensor([[1.0, 1.0]])
        hs = []
        for _ in range(3):
            h = h @ w
            hs.append(h)
        grad.stack(hs).sum().backward()
        # reference: d/dw of sum_t sum(h0 w^t), by hand with NumPy
        w0, h0 = np.array([[0.5, -1.0], [2.0, 1.0]]), np.array([[1.0, 1.0]])
        ones = np.ones((1, 2))
        expected = (h0.T @ ones                                                       # t = 1
                    + h0.T @ ones @ w0.T + (h0 @ w0).T @ ones                         # t = 2
                    + h0.T @ ones @ (w0 @ w0).T + (h0 @ w0).T @ ones @ w0.T + (h0 @ w0 @ w0).T @ ones)
        np.testing.assert_allclose(host(w.grad), expected, rtol=1e-6)

        # a diamond: x -> a, b -> c
        x = grad.tensor([2.0], requires_grad=True)
        a = x * 3.0
        b = grad.exp(x)
        c = a * b + a
        c.backward(grad.tensor([1.0]))
        e2 = np.exp(np.float32(2.0))
        np.testing.assert_allclose(host(x.grad), [3 * e2 + 6 * e2 + 3], rtol=1e-6)


@backends
def test_slices_of_one_tensor_accumulate(backend):
    """Reading a sequence step by step (x[:, t]) sends sparse slice gradients that must add up."""
    with B.use(backend):
        x = grad.tensor(np.arange(12.0).reshape(2, 6), requires_grad=True)
        total = None
        for t in range(6):
            step = x[:, t] * float(t)
            total = step if total is None else total + step
        total = total + x[:, 2] + x[..., 1:3].sum(1)
        total.sum().backward()
        expected = np.tile(np.arange(6.0), (2, 1))
        expected[:, 2] += 2.0
        expected[:, 1] += 1.0
        np.testing.assert_array_equal(host(x.grad), expected)
        # a sliced leaf whose only consumer is the slice
        y = grad.tensor(np.ones((3, 2)), requires_grad=True)
        y[1].sum().backward()
        np.testing.assert_array_equal(host(y.grad), [[0, 0], [1, 1], [0, 0]])


@backends
def test_split_and_cat_round_trip_gradients(backend):
    with B.use(backend):
        x = grad.tensor(np.arange(10.0).reshape(2, 5), requires_grad=True)
        a, b, c = x.split([1, 3, 1], dim=1)
        y = grad.cat([c, a * 2.0, b], dim=1)
        assert y.shape == (2, 5)
        y.backward(grad.tensor(np.ones((2, 5))))
        np.testing.assert_array_equal(host(x.grad), [[2, 1, 1, 1, 1], [2, 1, 1, 1, 1]])


@backends
def test_gather_and_index_select_repeated_indices(backend):
    with B.use(backend):
        x = grad.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
        grad.index_select(x, 1, [2, 2, 0]).sum().backward()
        np.testing.assert_array_equal(host(x.grad), [[1, 0, 2], [1, 0, 2]])
        x.grad = None
        idx = grad.tensor(np.array([[1, 1], [0, 2]]))
        g = grad.gather(x, 1, idx)
        np.testing.assert_array_equal(g.numpy(), [[1, 1], [3, 5]])
        g.sum().backward()
        np.testing.assert_array_equal(host(x.grad), [[0, 2, 0], [1, 0, 1]])


@backends
def test_comparisons_argmax_topk_have_no_gradient(backend):
    with B.use(backend):
        x = grad.tensor([[1.0, 5.0, 3.0], [4.0, 4.0, 0.0]], requires_grad=True)
        assert (x > 2.0).numpy().tolist() == [[False, True, True], [True, True, False]]
        assert (x == x).numpy().all()
        assert not (x < 1.0).requires_grad
        assert grad.argmax(x, dim=1).numpy().tolist() == [1, 0]          # first on ties
        assert grad.argmax(x).item() == 1
        top = x.topk(2, dim=1)
        assert top.values.numpy().tolist() == [[5.0, 3.0], [4.0, 4.0]]
        assert top.indices.numpy().tolist() == [[1, 2], [0, 1]]
        assert not top.values.requires_grad


@backends
def test_numpy_spellings_are_aliases(backend):
    with B.use(backend):
        x = grad.tensor(np.arange(6.0).reshape(2, 3))
        assert x.sum(axis=1, keepdims=True).shape == (2, 1)
        assert grad.mean(x, axis=0).numpy().tolist() == [1.5, 2.5, 3.5]
        assert grad.cat([x, x], axis=0).shape == (4, 3)
        with pytest.raises(TypeError, match="not both"):
            x.sum(dim=0, axis=0)


def _host_all(out):
    """The host arrays of an op's result: a tensor, or a tuple of them (split, topk)."""
    items = out if isinstance(out, tuple) else (out,)
    return [host(t.data) for t in items]


def _dim_alias_cases():
    """``(name, call)`` for every op and Tensor method that takes ``dim``: ``call(**kw)`` passes
    ``kw`` (``dim=`` or ``axis=``) through; the dim used is never the op's default."""
    x = grad.tensor(np.arange(24.0).reshape(2, 3, 4) % 7.0)                    # (2, 3, 4)
    ones = grad.tensor(np.arange(8.0).reshape(2, 1, 4))                       # (2, 1, 4)
    idx = grad.tensor(np.array([2, 0, 2]))                                    # (3,)
    gidx = grad.tensor(np.array([[[3, 0], [1, 1], [0, 2]], [[2, 2], [3, 1], [0, 0]]]))  # (2, 3, 2)
    return [
        ("sum", 1, lambda **kw: grad.sum(x, **kw)),
        ("mean", 1, lambda **kw: grad.mean(x, **kw)),
        ("amax", 1, lambda **kw: grad.amax(x, **kw)),
        ("max", 1, lambda **kw: grad.max(x, **kw)),
        ("argmax", 1, lambda **kw: grad.argmax(x, **kw)),
        ("topk", 1, lambda **kw: grad.topk(x, 2, **kw)),
        ("cat", 1, lambda **kw: grad.cat([x, x], **kw)),
        ("concat", 2, lambda **kw: grad.concat([x, x], **kw)),
        ("stack", 2, lambda **kw: grad.stack([x, x], **kw)),
        ("split", 2, lambda **kw: grad.split(x, 3, **kw)),
        ("index_select", 1, lambda **kw: grad.index_select(x, index=idx, **kw)),
        ("gather", 2, lambda **kw: grad.gather(x, index=gidx, **kw)),
        ("squeeze", 1, lambda **kw: grad.squeeze(ones, **kw)),
        ("unsqueeze", 1, lambda **kw: grad.unsqueeze(x, **kw)),
        ("softmax", 1, lambda **kw: F.softmax(x, **kw)),
        ("log_softmax", 0, lambda **kw: F.log_softmax(x, **kw)),
        ("Tensor.sum", 2, lambda **kw: x.sum(**kw)),
        ("Tensor.mean", 2, lambda **kw: x.mean(**kw)),
        ("Tensor.amax", 0, lambda **kw: x.amax(**kw)),
        ("Tensor.max", 0, lambda **kw: x.max(**kw)),
        ("Tensor.argmax", 0, lambda **kw: x.argmax(**kw)),
        ("Tensor.topk", 0, lambda **kw: x.topk(1, **kw)),
        ("Tensor.split", 1, lambda **kw: x.split([1, 2], **kw)),
        ("Tensor.index_select", 2, lambda **kw: x.index_select(index=idx, **kw)),
        ("Tensor.gather", 2, lambda **kw: x.gather(index=gidx, **kw)),
        ("Tensor.squeeze", -2, lambda **kw: ones.squeeze(**kw)),
        ("Tensor.unsqueeze", -1, lambda **kw: x.unsqueeze(**kw)),
    ]


KEEPDIM_OPS = ["sum", "mean", "amax", "max", "argmax", "Tensor.sum", "Tensor.mean",
               "Tensor.amax", "Tensor.max", "Tensor.argmax"]


@backends
def test_every_dim_alias_matches_dim_and_both_is_an_error(backend):
    """``axis=`` is ``dim=`` under NumPy's name, ``keepdims=`` is ``keepdim=``; giving both
    spellings is a TypeError, for every op and Tensor method that takes them."""
    with B.use(backend):
        cases = _dim_alias_cases()
        for name, d, call in cases:
            expected = _host_all(call(dim=d))
            got = _host_all(call(axis=d))
            assert len(got) == len(expected), name
            for e, g in zip(expected, got):
                assert g.shape == e.shape, name
                np.testing.assert_array_equal(g, e, err_msg=name)
            with pytest.raises(TypeError, match="not both"):
                call(dim=d, axis=d)
        by_name = {name: (d, call) for name, d, call in cases}
        for name in KEEPDIM_OPS:
            d, call = by_name[name]
            kept = _host_all(call(dim=d, keepdim=True))[0]
            assert kept.ndim == 3 and kept.shape[d] == 1, name
            np.testing.assert_array_equal(_host_all(call(axis=d, keepdims=True))[0], kept, err_msg=name)
            with pytest.raises(TypeError, match="not both"):
                call(dim=d, keepdim=True, keepdims=True)
        assert set(KEEPDIM_OPS) <= set(by_name)
        x = grad.tensor(np.zeros((2, 3)))
        with pytest.raises(TypeError, match="needs dim"):
            grad.unsqueeze(x)
        with pytest.raises(TypeError, match="needs dim"):
            grad.index_select(x, index=grad.tensor(np.array([0])))


def test_only_the_backend_module_imports_numpy_or_cupy():
    """``grad/backend.py`` is the one module of ``grad/`` that may import NumPy or CuPy; the rest
    reach arrays through the namespace (``B.xp``), so all three backends run them."""
    import ast
    import pathlib
    root = pathlib.Path(grad.__file__).resolve().parent
    banned = {"numpy", "cupy", "cupyx"}
    offenders = []
    files = sorted(root.rglob("*.py"))
    assert len(files) > 5
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel == "backend.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and node.args
                  and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                  and getattr(node.func, "attr", getattr(node.func, "id", None))
                  in ("import_module", "__import__")):
                names = [node.args[0].value]
            offenders += [f"grad/{rel}:{node.lineno} imports {n}" for n in names
                          if n.split(".")[0] in banned]
    assert not offenders, "\n".join(offenders)


def test_cross_entropy_backward_twice_through_a_retained_graph():
    # The fused cross-entropy turns its saved softmax into the gradient in place. A second
    # backward through a retained graph (here with a graph-freeing backward run inside the first,
    # by an op's backward) must find it used up and compute it again: the same gradient twice.
    import grad.functional as F
    from grad.tensor import make
    side = grad.tensor([1.0, 2.0], requires_grad=True)

    def passthrough(x):
        def backward(g):
            (side * 2.0).sum().backward()                   # an inner, graph-freeing sweep
            return (g,)
        return make(x.data, (x,), backward, "passthrough")

    logits = grad.tensor([[0.3, -1.2, 2.0], [1.0, 0.5, -0.5]], requires_grad=True)
    loss = passthrough(F.cross_entropy(logits, grad.tensor([2, 0]), label_smoothing=0.1))
    loss.backward(retain_graph=True)
    first = logits.grad.copy()
    logits.grad = None
    loss.backward()
    np.testing.assert_array_equal(logits.grad, first)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()
