"""Tests of the tester: ``grad.gradcheck`` must fail on deliberately wrong backwards, pass on the
right ones, and report what went wrong. Conventions at kinks, which central differences cannot
judge, are checked by exact values."""
import numpy as np
import pytest

import grad
import grad.functional as F
from grad import GradcheckError, gradcheck
from grad import backend as B
from grad.tensor import make
from helpers import backends


def leaf(shape, lo=-2.0, hi=2.0, seed=0):
    return grad.tensor(np.random.default_rng(seed).uniform(lo, hi, shape), requires_grad=True)


# ------------------------------------------------------------------ deliberately wrong ops
def softmax_without_cross_term(x):
    xp = B.xp
    z = xp.exp(x.data - xp.max(x.data, axis=-1, keepdims=True))
    y = z / xp.sum(z, axis=-1, keepdims=True)
    return make(y, (x,), lambda g: (y * g,), "bad_softmax")          # forgot - y * sum(g * y)


def softmax_with_mean_instead_of_weighted_sum(x):
    """``y * (g - mean(g))`` instead of ``y * (g - sum(g * y))``: right whenever the cotangent is
    constant along the softmax axis (both then give 0), wrong for any other cotangent."""
    xp = B.xp
    z = xp.exp(x.data - xp.max(x.data, axis=-1, keepdims=True))
    y = z / xp.sum(z, axis=-1, keepdims=True)
    return make(y, (x,), lambda g: (y * (g - xp.mean(g, axis=-1, keepdims=True)),), "bad_softmax_mean")


def relu_with_slope_one_at_zero(x):
    xp = B.xp
    nonneg = xp.astype(x.data >= 0, x.dtype)                           # wrong at exactly 0
    return make(x.data * nonneg, (x,), lambda g: (g * nonneg,), "bad_relu0")


def relu_passing_everything(x):
    xp = B.xp
    positive = xp.astype(x.data > 0, x.dtype)
    return make(x.data * positive, (x,), lambda g: (g,), "bad_relu")  # slope 1 for x < 0 too


def embedding_without_accumulation(ids, weight):
    """Backward writes each gradient row into its slot instead of adding: with a repeated id the
    last write wins (what ``gw[ids] = g`` does)."""
    xp = B.xp
    idx = ids.data
    n_rows, dim = weight.shape
    out = xp.take(weight.data, idx, axis=0)

    def backward(g):
        positions = B.arange(idx.shape[0], like=idx)                           # (N,)
        onehot = idx[None, :] == B.arange(n_rows, like=idx)[:, None]           # (V, N)
        last = xp.max(xp.where(onehot, positions[None, :], B.full((), -1, like=idx)), axis=1)
        winner = xp.astype(onehot & (positions[None, :] == last[:, None]), g.dtype)
        return (xp.matmul(winner, g),)                                        # (V, E)
    return make(out, (weight,), backward, "bad_embedding")


def relu_gradient_at_zero(relu_fn):
    x = grad.tensor([-1.0, 0.0, 0.0, 2.0], dtype="float64", requires_grad=True)
    relu_fn(x).sum().backward()
    return B.to_numpy(x.grad)


def assert_relu_convention(relu_fn):
    """ReLU'(0) = 0 (PyTorch's convention): checked by value, since central differences at 0
    see the average slope 0.5 whatever the convention."""
    np.testing.assert_array_equal(relu_gradient_at_zero(relu_fn), [0.0, 0.0, 0.0, 1.0])


# ------------------------------------------------------------------------------- the tests
@backends
def test_softmax_without_cross_term_fails(backend):
    with B.use(backend):
        x = leaf((3, 4))
        assert gradcheck(lambda t: F.softmax(t, -1), [x])
        with pytest.raises(GradcheckError, match="relative error"):
            gradcheck(softmax_without_cross_term, [x])
        big = leaf((6, 15), seed=1)                         # 90 elements: the coordinate path
        assert gradcheck(lambda t: F.softmax(t, -1), [big])
        with pytest.raises(GradcheckError):
            gradcheck(softmax_without_cross_term, [big])


@backends
def test_a_backward_wrong_only_for_non_constant_cotangents_fails(backend):
    """The checked scalar must use a random cotangent: with an all-ones one, ``L = sum(softmax)``
    is the constant B, its gradient is 0, and this wrong backward also returns 0 there, so the
    coordinate path (a 6x15 input) would accept it."""
    with B.use(backend):
        big = leaf((6, 15), seed=1)
        assert gradcheck(lambda t: F.softmax(t, -1), [big])
        with pytest.raises(GradcheckError, match="relative error"):
            gradcheck(softmax_with_mean_instead_of_weighted_sum, [big])
        ones = B.full((6, 15), 1.0, like=big.data)
        wrong = softmax_with_mean_instead_of_weighted_sum(big)
        wrong.backward(ones)
        np.testing.assert_allclose(B.to_numpy(big.grad), 0.0, atol=1e-15)     # invisible to ones
        big.grad = None


@backends
def test_relu_convention_at_zero_is_checked_by_value(backend):
    with B.use(backend):
        assert_relu_convention(grad.relu)
        assert_relu_convention(lambda t: t.relu())
        with pytest.raises(AssertionError):
            assert_relu_convention(relu_with_slope_one_at_zero)
        np.testing.assert_array_equal(relu_gradient_at_zero(relu_with_slope_one_at_zero), [0, 1, 1, 1])
        # Central differences cannot tell the conventions apart at 0: both fail there...
        zero = grad.tensor([0.0], dtype="float64", requires_grad=True)
        for fn in (grad.relu, relu_with_slope_one_at_zero):
            with pytest.raises(GradcheckError):
                gradcheck(fn, [zero])
        # ...and both pass away from 0, where they agree.
        away = grad.tensor([-1.5, -0.3, 0.2, 1.0], dtype="float64", requires_grad=True)
        assert gradcheck(grad.relu, [away])
        assert gradcheck(relu_with_slope_one_at_zero, [away])


@backends
def test_relu_with_a_wrong_backward_elsewhere_fails(backend):
    with B.use(backend):
        x = grad.tensor([-1.5, -0.3, 0.2, 1.0, 2.0], dtype="float64", requires_grad=True)
        assert gradcheck(grad.relu, [x])
        with pytest.raises(GradcheckError):
            gradcheck(relu_passing_everything, [x])


@backends
def test_embedding_without_accumulation_fails_on_repeated_ids(backend):
    with B.use(backend):
        w = leaf((5, 3))
        distinct = grad.tensor(np.array([4, 0, 2]))
        repeated = grad.tensor(np.array([1, 3, 1, 1, 0]))
        for ids in (distinct, repeated):
            assert gradcheck(lambda t: F.embedding(ids, t), [w])
        assert gradcheck(lambda t: embedding_without_accumulation(distinct, t), [w])
        with pytest.raises(GradcheckError):
            gradcheck(lambda t: embedding_without_accumulation(repeated, t), [w])


@backends
def test_other_wrong_backwards_fail(backend):
    with B.use(backend):
        xp = B.xp
        a, b = leaf((3, 3), seed=1), leaf((3, 3), seed=2)

        def matmul_wrong_transpose(p, q):                        # dA = G B instead of G B^T
            return make(xp.matmul(p.data, q.data), (p, q),
                        lambda g: (xp.matmul(g, q.data), xp.matmul(xp.matrix_transpose(p.data), g)),
                        "bad_matmul")

        def square_missing_factor_two(p):                       # d(x^2) = x dx (forgot the 2)
            return make(p.data * p.data, (p,), lambda g: (g * p.data,), "bad_square")

        assert gradcheck(lambda p, q: p @ q, [a, b])
        with pytest.raises(GradcheckError):
            gradcheck(matmul_wrong_transpose, [a, b])
        assert gradcheck(lambda p: p * p, [a])
        with pytest.raises(GradcheckError):
            gradcheck(square_missing_factor_two, [a])


@backends
def test_a_gradient_of_the_wrong_shape_is_reported(backend):
    with B.use(backend):
        x, row = leaf((2, 3)), leaf((3,), seed=1)

        def add_without_unbroadcast(p, q):                       # q's gradient left at (2, 3)
            return make(p.data + q.data, (p, q), lambda g: (g, g), "bad_add")

        assert gradcheck(lambda p, q: p + q, [x, row])
        with pytest.raises(GradcheckError, match="wrong shape"):
            gradcheck(add_without_unbroadcast, [x, row])
        big, big_row = leaf((30, 3)), leaf((3,), seed=1)        # the coordinate path
        with pytest.raises(GradcheckError, match="gradient shape"):
            gradcheck(add_without_unbroadcast, [big, big_row])


@backends
def test_one_wrong_coordinate_of_a_large_input_is_found(backend):
    """Above ``max_coordinates`` elements only a sample of coordinates is checked; the random
    direction across all inputs still sees a single wrong one."""
    with B.use(backend):
        x = leaf((40, 25), -1.0, 1.0)                           # 1000 elements

        def tanh_wrong_at_one_place(p):
            xp = B.xp
            out = xp.tanh(p.data)
            def backward(g):
                d = g * (1.0 - out * out)
                flat = xp.reshape(d, (-1,))
                flat[777] = flat[777] + 1.0
                return (xp.reshape(flat, p.data.shape),)
            return make(out, (p,), backward, "bad_tanh")

        assert gradcheck(grad.tanh, [x])
        with pytest.raises(GradcheckError, match="random direction"):
            gradcheck(tanh_wrong_at_one_place, [x], max_coordinates=16)


@backends
def test_second_output_and_params_are_checked(backend):
    with B.use(backend):
        x = leaf((2, 3))

        def square_wrong(p):
            return make(p.data * p.data, (p,), lambda g: (g * p.data,), "bad_square")

        def two_outputs(p, wrong):
            first = grad.tanh(p)
            second = square_wrong(p) if wrong else p * p
            return first, second

        assert gradcheck(lambda p: two_outputs(p, False), [x])
        with pytest.raises(GradcheckError, match=r"d output 1 \[\d, \d\] / d input 0 \[\d, \d\]"):
            gradcheck(lambda p: two_outputs(p, True), [x])

        lin = grad.nn.Linear(3, 2).double()
        # The parameters are checked only when passed as params=...
        assert gradcheck(lambda p: lin(p), [x], params=list(lin.parameters()))

        def bad_linear(p):
            w = lin.weight
            return make(B.xp.matmul(p.data, B.xp.matrix_transpose(w.data)), (p, w),
                        lambda g: (B.xp.matmul(g, w.data), B.xp.zeros_like(w.data)), "bad_linear")
        assert gradcheck(bad_linear, [x])                       # the weight is not checked here
        with pytest.raises(GradcheckError):
            gradcheck(bad_linear, [x], params=[lin.weight])


def tanh_wrong_at(flat_index):
    """tanh whose backward is three times too large at one flat position."""
    def fn(p):
        xp = B.xp
        out = xp.tanh(p.data)
        def backward(g):
            d = xp.reshape(g * (1.0 - out * out), (-1,))
            d[flat_index] = d[flat_index] * 3.0
            return (xp.reshape(d, p.data.shape),)
        return make(out, (p,), backward, "bad_tanh")
    return fn


@backends
def test_failure_message_gives_nd_coordinates_and_relative_error(backend):
    """The worst coordinates are reported as n-d positions (``input 0 [3, 8]``), not flat
    indices, with their relative error; in both the coordinate and the full-Jacobian path."""
    with B.use(backend):
        big = leaf((10, 9), -1.0, 1.0)                          # 90 > 64: the coordinate path
        with pytest.raises(GradcheckError) as info:
            gradcheck(tanh_wrong_at(35), [big])                 # 35 = 3 * 9 + 8
        worst = str(info.value).splitlines()[1]
        assert worst.strip().startswith("input 0 [3, 8] of shape (10, 9): analytic")
        assert "relative error" in worst and "flat index" not in str(info.value)

        small = leaf((3, 4), -1.0, 1.0)                         # 12 elements: the full Jacobian
        with pytest.raises(GradcheckError) as info:
            gradcheck(tanh_wrong_at(6), [small])                # 6 = 1 * 4 + 2
        lines = str(info.value).splitlines()
        assert "1 coordinate(s)" in lines[0]
        assert lines[1].strip().startswith("d output 0 [1, 2] / d input 0 [1, 2]: analytic")
        assert "relative error" in lines[1]

        second = leaf((2,), seed=3)                             # the input's number is kept
        with pytest.raises(GradcheckError, match=r"d output 0 \[\d, \d\] / d input 1 \[1\]: "):
            gradcheck(lambda p, q: p * 1.0 + drops_its_gradient(q), [small, second])


def drops_its_gradient(q):
    """A (3, 4) output that depends on ``q[1]``, with a backward that returns zeros."""
    out = B.full((3, 4), 1.0, like=q.data) * q.data[1]
    return make(out, (q,), lambda g: (B.zeros(q.shape, like=q.data),), "bad_broadcast")


@backends
def test_gradcheck_arguments_and_cleanup(backend):
    with B.use(backend):
        x = leaf((2, 2))
        before = x.numpy().copy()
        assert gradcheck(grad.exp, [x]) is True
        np.testing.assert_array_equal(x.numpy(), before)        # data restored
        assert x.grad is None                                  # no gradient left behind
        assert gradcheck(relu_passing_everything, [leaf((4,), -2, -1)], raise_exception=False) is False
        with pytest.raises(TypeError, match="float64"):
            gradcheck(grad.exp, [grad.tensor([1.0, 2.0], requires_grad=True)])
        with pytest.raises(ValueError, match="requires grad"):
            gradcheck(grad.exp, [grad.tensor(np.array([1.0, 2.0]))])
