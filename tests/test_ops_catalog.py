"""Property tests over the op catalog (``op_catalog.py``), on every backend.

For each drawn example of each op:

1. the forward equals the NumPy reference (float64, tight tolerance);
2. the gradients reaching the inputs have the inputs' shapes and dtypes (in float64 and in
   float32), and inputs that do not require grad get none;
3. ``grad.gradcheck`` passes (random cotangent; full Jacobian for tiny inputs).

On the numpy backend the tensors' data may be a non-contiguous view (every other element of a
bigger array, a Fortran-ordered copy, or a reversed view), since ops must not assume a layout.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import grad
from helpers import BACKENDS
from op_catalog import CATALOG

LAYOUTS = ["contiguous", "strided", "fortran", "reversed"]


def relayout(a: np.ndarray, kind: str) -> np.ndarray:
    """The same values as ``a`` in a different memory layout (a view into a bigger buffer)."""
    if a.ndim == 0 or kind == "contiguous":
        return a
    if kind == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],))
        big[..., ::2] = a
        return big[..., ::2]
    if kind == "fortran":
        return np.asfortranarray(a)
    flipped = np.ascontiguousarray(a[::-1])
    return flipped[::-1]


def as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", CATALOG, ids=lambda o: o.name)
@given(data=st.data())
def test_op_against_reference_and_gradcheck(backend, op, data):
    case = data.draw(op.cases, label="case")
    n = len(case.arrays)
    needs = data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="requires_grad")
    if not any(needs):
        needs[data.draw(st.integers(0, n - 1), label="the input that requires grad")] = True
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout") if backend == "numpy" else "contiguous"
    arrays = [relayout(a, layout) for a in case.arrays]
    with grad.backend.use(backend):
        # 1. forward against the reference
        tensors = [grad.tensor(a, requires_grad=r) for a, r in zip(arrays, needs)]
        outs = as_tuple(op.run(*tensors, **case.params))
        refs = as_tuple(op.ref(*case.arrays, **case.params))
        assert len(outs) == len(refs)
        for o, r in zip(outs, refs):
            assert o.shape == np.shape(r)
            assert grad.backend.dtype_name(o.dtype) == "float64"
            np.testing.assert_allclose(o.numpy(), r, rtol=1e-10, atol=1e-12)

        # 2. gradient shapes and dtypes, float64 and float32
        for dtype in ("float64", "float32"):
            ts = [grad.tensor(a.astype(dtype), requires_grad=r) for a, r in zip(arrays, needs)]
            outs = as_tuple(op.run(*ts, **case.params))
            assert all(grad.backend.dtype_name(o.dtype) == dtype for o in outs), "forward changed the dtype"
            loss = None
            gen = grad.Generator(1)
            for o in outs:
                term = (o * grad.Tensor(gen.normal(o.shape, dtype=dtype))).sum()
                loss = term if loss is None else loss + term
            loss.backward()
            for t, r in zip(ts, needs):
                if not r:
                    assert t.grad is None
                    continue
                assert t.grad is not None
                assert tuple(t.grad.shape) == t.shape
                assert grad.backend.dtype_name(t.grad.dtype) == dtype

        # 3. gradcheck (float64)
        assert grad.gradcheck(lambda *ts: op.run(*ts, **case.params), tensors)


def test_catalog_covers_the_required_ops():
    names = {o.name for o in CATALOG}
    required = {"add", "sub", "mul", "div", "pow_tensor", "neg", "scalar_rsub", "scalar_rdiv",
                "matmul_2d", "matmul_batched", "matmul_1d", "bmm", "sum", "mean", "amax", "max",
                "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "reshape", "view", "transpose",
                "permute", "unsqueeze", "squeeze", "cat", "stack", "split", "getitem",
                "getitem_named", "index_select", "gather", "where", "masked_fill", "expand",
                "softmax", "log_softmax", "nll_loss", "cross_entropy", "linear", "embedding",
                "dropout", "lstm_cell", "lstm_step", "mse_loss", "erf", "gelu", "gelu_tanh",
                "layer_norm", "layer_norm_reference", "scaled_dot_product_attention",
                "scaled_dot_product_attention_reference"}
    assert required <= names, required - names
