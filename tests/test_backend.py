"""The array backend: switching, the environment variable, clear errors for CuPy, and the helpers
the standard lacks (scatter_add, erf, seeded generators, to_numpy)."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import grad
from grad import backend as B
from helpers import BACKENDS, backends

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_use_is_a_context_manager_that_restores():
    assert B.name() == "numpy"
    with B.use("array_api_strict") as xp:
        assert B.name() == "array_api_strict" and B.xp is xp and B.get_xp() is xp
        with B.use("numpy"):
            assert B.name() == "numpy" and B.xp is np
        assert B.name() == "array_api_strict"
    assert B.name() == "numpy" and B.xp is np
    with pytest.raises(KeyError):
        with B.use("array_api_strict"):
            raise KeyError("boom")
    assert B.name() == "numpy"


def test_use_as_a_plain_call_switches():
    try:
        B.use("array_api_strict")
        assert B.name() == "array_api_strict"
        assert not isinstance(grad.tensor([1.0]).data, np.ndarray)
    finally:
        B.use("numpy")
    assert B.name() == "numpy"


def _run_python(code, **env):
    full_env = dict(os.environ, PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=60)


def test_environment_variable_selects_the_backend():
    code = "import grad; print(grad.backend.name(), type(grad.tensor([1.0]).data).__module__)"
    res = _run_python(code, GRAD_BACKEND="array_api_strict")
    assert res.returncode == 0, res.stderr
    name, module = res.stdout.split()
    assert name == "array_api_strict" and module.startswith("array_api_strict")
    res = _run_python(code, GRAD_BACKEND="numpy")
    assert res.stdout.split()[0] == "numpy"
    res = _run_python(code, GRAD_BACKEND="tensorflow")
    assert res.returncode != 0 and "BackendError" in res.stderr and "tensorflow" in res.stderr


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(B.BackendError, match="unknown backend 'jax'.*numpy"):
        B.use("jax")
    assert B.name() == "numpy"


@pytest.mark.skipif(B.gpu_available(), reason="a GPU is present: CuPy can be selected here")
def test_cupy_without_a_gpu_raises_with_the_reason():
    with pytest.raises(B.BackendError, match="cupy") as info:
        B.use("cupy")
    assert "not installed" in str(info.value) or "no usable CUDA device" in str(info.value)
    assert B.name() == "numpy"
    assert B.gpu_available() is False


def test_cupy_errors_say_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)                 # import fails
    with pytest.raises(B.BackendError, match="CuPy is not installed.*pip install"):
        B.use("cupy")
    fake = types.ModuleType("cupy")
    fake.is_available = lambda: False                              # installed, no device
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(B.BackendError, match="no usable CUDA device.*nvidia-smi"):
        B.use("cupy")
    assert not B.gpu_available()
    assert B.name() == "numpy"


def _add_at_reference(index, values, n_rows):
    out = np.zeros((n_rows,) + values.shape[1:])
    for i, row in zip(index, values):
        out[i] += row
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data())
def test_scatter_add_matches_a_loop(backend, data):
    n_rows = data.draw(st.integers(1, 5))
    index = np.asarray(data.draw(st.lists(st.integers(0, n_rows - 1), min_size=1, max_size=8)))
    tail = data.draw(st.lists(st.integers(1, 3), max_size=2))
    values = np.asarray(data.draw(st.lists(st.floats(-10, 10), min_size=len(index) * int(np.prod(tail)),
                                           max_size=len(index) * int(np.prod(tail))))).reshape(len(index), *tail)
    with B.use(backend):
        out = B.scatter_add(B.from_numpy(index.astype(np.int64)), B.from_numpy(values), n_rows)
        assert B.is_array(out)
        np.testing.assert_allclose(B.to_numpy(out), _add_at_reference(index, values, n_rows),
                                   rtol=1e-12, atol=1e-12)


@backends
def test_scatter_add_repeated_indices(backend):
    with B.use(backend):
        idx = B.from_numpy(np.array([2, 0, 2, 2]))
        vals = B.from_numpy(np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]]))
        out = B.to_numpy(B.scatter_add(idx, vals, 3))
        np.testing.assert_array_equal(out, [[2.0, 20.0], [0.0, 0.0], [8.0, 80.0]])


@pytest.mark.parametrize("n_rows", [4000, 12])
def test_scatter_add_gives_the_bits_of_add_at_with_many_or_few_distinct_indices(n_rows):
    """NumPy: mostly distinct indices (a large vocabulary: first occurrences copied, repeats
    added) and few distinct ones (plain ``add.at``) both give exactly ``np.add.at``'s sums."""
    rng = np.random.default_rng(n_rows)
    index = rng.integers(0, n_rows, 600)
    index[::9] = 3                                                  # one index repeated often
    values = rng.standard_normal((600, 5)).astype(np.float32)
    expected = np.zeros((n_rows, 5), np.float32)
    np.add.at(expected, index, values)
    with B.use("numpy"):
        np.testing.assert_array_equal(B.scatter_add(index, values, n_rows), expected)


@pytest.mark.parametrize("n_rows", [4000, 12])
def test_scatter_add_in_rounds_gives_the_bits_of_add_at_rank_by_rank(n_rows):
    """NumPy's scatter-add of wide rows runs one fancy-indexed assignment or addition per
    occurrence rank (every index's first rows, then its second ...) and ``add.at`` only for the
    ranks of a few frequent indices: exactly ``np.add.at``'s sums, for ranks above and below
    the round threshold, and with ``skip`` the skipped slot zero."""
    rng = np.random.default_rng(n_rows + 1)
    index = rng.integers(0, n_rows, 900)
    index[::3] = rng.integers(0, 3, 300)                            # three frequent indices
    width = B.SCATTER_ROUND_WIDTH + 3                               # rows as wide as an embedding's
    values = rng.standard_normal((900, width)).astype(np.float32)
    expected = np.zeros((n_rows, width), np.float32)
    np.add.at(expected, index, values)
    with B.use("numpy"):
        ranks = np.bincount([int(np.sum(index[:k] == index[k])) for k in range(900)])
        if n_rows > 100:                                            # rounds, then add.at
            assert ranks[1] >= B.SCATTER_ROUND_MIN and ranks[-1] < B.SCATTER_ROUND_MIN
        else:                                                       # rank 0, then add.at
            assert ranks[0] < B.SCATTER_ROUND_MIN
        np.testing.assert_array_equal(B.scatter_add(index, values, n_rows), expected)
        expected[1] = 0.0
        np.testing.assert_array_equal(B.scatter_add(index, values, n_rows, skip=1), expected)


@backends
def test_scatter_add_skip_leaves_that_slot_zero(backend):
    with B.use(backend):
        idx = B.from_numpy(np.array([2, 0, 2, 1]))
        vals = B.from_numpy(np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]]))
        out = B.to_numpy(B.scatter_add(idx, vals, 3, skip=2))
        np.testing.assert_array_equal(out, [[2.0, 20.0], [4.0, 40.0], [0.0, 0.0]])


@backends
def test_row_dot_is_the_sum_of_products_along_the_last_axis(backend):
    rng = np.random.default_rng(1)
    a, b, v = rng.normal(size=(4, 3, 5)), rng.normal(size=(4, 3, 5)), rng.normal(size=5)
    with B.use(backend):
        for other in (b, v):                                          # rows, or one vector
            out = B.to_numpy(B.row_dot(B.from_numpy(a), B.from_numpy(other)))
            np.testing.assert_allclose(out, np.sum(a * other, axis=-1), rtol=1e-12, atol=1e-12)


@backends
def test_sum_rows_is_the_sum_over_the_first_axis(backend):
    rng = np.random.default_rng(2)
    with B.use(backend):
        for shape in ((7, 5), (1, 3), (0, 4), (300, 33)):
            a = rng.normal(size=shape)
            out = B.to_numpy(B.sum_rows(B.from_numpy(a)))
            assert out.shape == (shape[1],)
            np.testing.assert_allclose(out, np.sum(a, axis=0), rtol=1e-12, atol=1e-12)
        a32 = B.from_numpy(rng.normal(size=(64, 9)).astype(np.float32))
        assert B.dtype_name(B.sum_rows(a32).dtype) == "float32"


def _draws(gen):
    return [B.to_numpy(gen.normal((2, 3), 0.5, 2.0, dtype="float64")),
            B.to_numpy(gen.uniform((4,), -1.0, 1.0)),
            B.to_numpy(gen.bernoulli((5,), 0.3)),
            B.to_numpy(gen.integers(0, 10, (3,)))]


def test_generator_gives_the_same_numbers_on_every_backend():
    results = []
    for backend in ("numpy", "array_api_strict"):
        with B.use(backend):
            results.append(_draws(grad.Generator(42)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    assert results[0][1].dtype == np.float32 and results[0][3].dtype == np.int64
    other = _draws(grad.Generator(43))
    assert not np.array_equal(results[0][0], other[0])


@backends
def test_generator_state_round_trip(backend):
    with B.use(backend):
        gen = grad.Generator(7)
        _draws(gen)
        state = gen.state_dict()
        json.dumps(state)                                               # checkpoint-friendly
        after = _draws(gen)
        fresh = grad.Generator(0)
        fresh.load_state_dict(json.loads(json.dumps(state)))
        for a, b in zip(after, _draws(fresh)):
            np.testing.assert_array_equal(a, b)
        gen.manual_seed(7)
        assert np.array_equal(_draws(gen)[0], _draws(grad.Generator(7))[0])
        assert list(gen.host_permutation(5)) != [] and gen.host_random(3).shape == (3,)


def test_global_generator_manual_seed():
    grad.manual_seed(3)
    a = grad.randn(4).numpy()
    grad.manual_seed(3)
    b = grad.randn(4).numpy()
    np.testing.assert_array_equal(a, b)
    assert grad.rand(2, 3).shape == (2, 3)


@backends
def test_to_numpy_and_placement(backend):
    with B.use(backend):
        host = np.array([[1.0, 2.0]], dtype=np.float32)
        dev = B.from_numpy(host)
        assert B.is_array(dev)
        back = B.to_numpy(dev)
        assert isinstance(back, np.ndarray) and back.dtype == np.float32
        np.testing.assert_array_equal(back, host)
        assert B.to_numpy(host) is host                                 # NumPy arrays pass through
        for made in (B.zeros((2,), like=dev), B.full((2,), 3.0, like=dev),
                     B.arange(3, like=dev), B.new((2,), 1.0, "float64"), B.new_arange(2, 5)):
            assert B.is_array(made)
            if backend == "array_api_strict":
                assert made.device == dev.device
        assert B.to_numpy(B.new_arange(2, 5)).tolist() == [2, 3, 4]
        assert B.dtype_name(B.zeros((1,), like=dev).dtype) == "float32"
        assert B.is_floating(dev.dtype) and not B.is_floating(B.arange(2, like=dev).dtype)
        with pytest.raises(ValueError, match="unsupported dtype"):
            B.get_dtype("complex128")


def test_array_api_strict_refuses_numpy_only_calls():
    """The point of the third leg: a stray NumPy call on a device array fails loudly."""
    with B.use("array_api_strict"):
        x = grad.tensor([1.0, 2.0])
        with pytest.raises(Exception):
            np.asarray(x.data)


# ----------------------------------------------------------------------------- in-place helpers
@backends
def test_exp_inplace_equals_exp(backend):
    with B.use(backend):
        host = np.array([[-3.0, 0.0, 2.5], [1.0, -1.0, 0.5]], dtype=np.float32)
        a = B.from_numpy(host.copy())
        out = B.exp_(a)
        np.testing.assert_allclose(B.to_numpy(out), np.exp(host), rtol=1e-6)
        if backend in ("numpy", "cupy"):
            assert out is a                     # the buffer itself was reused


@backends
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_erf_matches_the_c_library(backend, dtype):
    import math
    z = np.concatenate([np.linspace(-7.0, 7.0, 2801), [0.0, -0.0, 2.0, -2.0, 6.0, 1e-300, 40.0]])
    exact = np.array([math.erf(v) for v in z])
    with B.use(backend):
        out = B.erf(B.from_numpy(z.astype(dtype)))
        assert B.dtype_name(out.dtype) == dtype
        tol = 5e-15 if dtype == "float64" else 5e-7
        np.testing.assert_allclose(B.to_numpy(out), exact, rtol=0, atol=tol)
        assert np.all(np.diff(B.to_numpy(out)[:2801]) >= 0)                 # monotone


@backends
def test_add_at_columns_adds_one_element_per_row(backend):
    with B.use(backend):
        host = np.arange(12, dtype=np.float64).reshape(3, 4)
        cols = B.from_numpy(np.array([3, 0, 3]))
        vals = B.from_numpy(np.array([10.0, -1.0, 0.5]))
        out = B.to_numpy(B.add_at_columns(B.from_numpy(host.copy()), cols, vals))
        expected = host.copy()
        expected[[0, 1, 2], [3, 0, 3]] += [10.0, -1.0, 0.5]
        np.testing.assert_array_equal(out, expected)


@backends
def test_contiguous_keeps_the_values_and_lays_a_transpose_out_row_major(backend):
    with B.use(backend):
        host = np.arange(12, dtype=np.float32).reshape(3, 4)
        t = B.xp.matrix_transpose(B.from_numpy(host))                    # (4, 3) view
        out = B.contiguous(t)
        np.testing.assert_array_equal(B.to_numpy(out), host.T)
        if backend == "numpy":
            assert not t.flags["C_CONTIGUOUS"] and out.flags["C_CONTIGUOUS"]
            assert B.contiguous(out) is out                              # no copy when laid out


def test_tune_host_allocator_is_idempotent_and_computation_is_unchanged():
    first = B.tune_host_allocator()
    assert isinstance(first, bool)
    assert B.tune_host_allocator() is first          # a second call changes nothing
    a = np.ones((600, 600), dtype=np.float32)        # large blocks still allocate and compute
    assert float((a @ a)[0, 0]) == 600.0
