"""``grad.nn``: the Module contract (registration, names, state dicts, modes, conversion), the
layers' shapes and default initialisations, and gradient clipping."""
import math

import numpy as np
import pytest

import grad
import grad.nn as nn
from grad import backend as B
from helpers import backends


def host(a):
    return B.to_numpy(a)


class Block(nn.Module):
    def __init__(self, gen):
        super().__init__()
        self.scale = nn.Parameter(grad.tensor(np.ones(3, np.float32)))
        self.proj = nn.Linear(3, 2, generator=gen)
        self.emb = nn.Embedding(5, 3, padding_idx=0, generator=gen)
        self.layers = nn.ModuleList([nn.Linear(2, 2, generator=gen), nn.Linear(2, 1, bias=False, generator=gen)])
        self.drop = nn.Dropout(0.5, generator=gen)
        self.note = "not a parameter"

    def forward(self, ids):
        h = self.emb(ids) * self.scale                                  # (B, 3)
        h = self.drop(grad.tanh(self.proj(h)))
        for layer in self.layers:
            h = layer(h)
        return h                                                         # (B, 1)


EXPECTED_NAMES = ["scale", "proj.weight", "proj.bias", "emb.weight", "layers.0.weight",
                  "layers.0.bias", "layers.1.weight"]


@backends
def test_registration_order_and_names(backend):
    with B.use(backend):
        m = Block(grad.Generator(0))
        assert [n for n, _ in m.named_parameters()] == EXPECTED_NAMES
        assert list(m.state_dict().keys()) == EXPECTED_NAMES
        assert len(list(m.parameters())) == 7
        assert [n for n, _ in m.named_modules()] == ["", "proj", "emb", "layers", "layers.0", "layers.1", "drop"]
        assert len(m.layers) == 2 and m.layers[1] is list(m.layers)[1]
        assert all(isinstance(p, nn.Parameter) and p.requires_grad and p.is_leaf for p in m.parameters())
        assert all(B.is_array(p.data) for p in m.parameters())           # on the active backend
        # re-assigning keeps the name's place; assigning a non-parameter unregisters it
        m.proj = nn.Linear(3, 2)
        m.proj.weight = nn.Parameter(grad.tensor(np.zeros((2, 3), np.float32)))
        assert [n for n, _ in m.named_parameters()] == EXPECTED_NAMES
        m.scale = None
        assert "scale" not in dict(m.named_parameters())
        assert "Block(" in repr(m) and "(proj): Linear(in_features=3" in repr(m)


@backends
def test_shared_parameters_are_listed_once(backend):
    with B.use(backend):
        class Tied(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(4, 3)
                self.out = nn.Linear(3, 4, bias=False)
                self.out.weight = self.emb.weight
        t = Tied()
        assert [n for n, _ in t.named_parameters()] == ["emb.weight"]
        assert list(t.state_dict()) == ["emb.weight"] and B.is_array(t.state_dict()["emb.weight"])


@backends
def test_module_misuse_is_reported(backend):
    with B.use(backend):
        class NoInit(nn.Module):
            def __init__(self):
                self.w = 1
        with pytest.raises(AttributeError, match="Module.__init__"):
            NoInit()
        with pytest.raises(NotImplementedError):
            nn.Module()(1)
        with pytest.raises(ValueError, match="positive"):
            nn.Linear(0, 3)
        with pytest.raises(ValueError, match="padding_idx"):
            nn.Embedding(3, 2, padding_idx=3)
        with pytest.raises(ValueError, match="positive"):
            nn.LSTM(2, 0)


@backends
def test_state_dict_round_trip(backend):
    with B.use(backend):
        a, b = Block(grad.Generator(1)).eval(), Block(grad.Generator(2)).eval()
        ids = grad.tensor(np.array([1, 3, 0]))
        assert not np.allclose(a(ids).numpy(), b(ids).numpy())
        b.load_state_dict(a.state_dict())
        np.testing.assert_array_equal(a(ids).numpy(), b(ids).numpy())
        # host NumPy arrays (as a checkpoint stores them) load too, converted to each dtype
        c = Block(grad.Generator(3)).eval()
        c.load_state_dict({k: host(v).astype(np.float64) for k, v in a.state_dict().items()})
        assert all(B.dtype_name(p.dtype) == "float32" and B.is_array(p.data) for p in c.parameters())
        np.testing.assert_array_equal(a(ids).numpy(), c(ids).numpy())


@backends
def test_load_state_dict_reports_every_problem_at_once(backend):
    with B.use(backend):
        m = Block(grad.Generator(0))
        state = dict(m.state_dict())
        del state["proj.bias"]
        state["extra.weight"] = state["scale"]
        state["layers.0.weight"] = B.zeros((3, 3), like=state["scale"])
        with pytest.raises(ValueError) as info:
            m.load_state_dict(state)
        msg = str(info.value)
        assert "missing keys: proj.bias" in msg
        assert "unexpected keys: extra.weight" in msg
        assert "layers.0.weight: expected (2, 2), got (3, 3)" in msg
        # non-strict: missing and unexpected keys are fine, a wrong shape never is
        state["layers.0.weight"] = m.state_dict()["layers.0.weight"]
        m.load_state_dict(state, strict=False)
        state["layers.0.weight"] = B.zeros((3, 3), like=state["scale"])
        with pytest.raises(ValueError, match="shape mismatch"):
            m.load_state_dict(state, strict=False)


@backends
def test_train_eval_and_dropout(backend):
    with B.use(backend):
        m = Block(grad.Generator(0))
        assert m.training and m.drop.training and m.layers[0].training
        assert m.eval() is m
        assert not any(mod.training for mod in m.modules())
        m.train()
        assert all(mod.training for mod in m.modules())
        d = nn.Dropout(0.5, generator=grad.Generator(0))
        x = grad.tensor(np.ones((10, 10)))
        assert d.eval()(x) is x
        y = d.train()(x).numpy()
        assert (y == 0).any() and (y == 2.0).any()
        with pytest.raises(ValueError):
            nn.Dropout(-0.1)


@backends
def test_zero_grad_and_to_double(backend):
    with B.use(backend):
        m = Block(grad.Generator(0)).eval()
        ids = grad.tensor(np.array([1, 2]))
        m(ids).sum().backward()
        assert all(p.grad is not None for n, p in m.named_parameters())
        m.zero_grad()
        assert all(p.grad is None for p in m.parameters())
        before = {k: host(v).copy() for k, v in m.state_dict().items()}
        assert m.double() is m
        assert all(B.dtype_name(p.dtype) == "float64" for p in m.parameters())
        out = m(ids)
        assert B.dtype_name(out.dtype) == "float64"
        out.sum().backward()
        assert all(B.dtype_name(p.grad.dtype) == "float64" for p in m.parameters())
        m.float()
        for k, v in m.state_dict().items():
            np.testing.assert_array_equal(host(v), before[k])


def test_moving_to_another_backend_keeps_the_values():
    m = Block(grad.Generator(0)).eval()
    ids = np.array([4, 1, 0])
    expected = m(grad.tensor(ids)).numpy()
    m.to("array_api_strict")
    with B.use("array_api_strict"):
        assert all(not isinstance(p.data, np.ndarray) and B.is_array(p.data) for p in m.parameters())
        out = m(grad.tensor(ids))
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
        out.sum().backward()
        assert all(B.is_array(p.grad) for p in m.parameters())
    m.to("numpy")
    assert all(isinstance(p.data, np.ndarray) for p in m.parameters())
    np.testing.assert_allclose(m(grad.tensor(ids)).numpy(), expected, rtol=1e-6)


@backends
def test_calling_a_module_moved_to_another_backend_says_which_to_use(backend):
    """``Module.to(name)`` moves the parameters, not the active backend; a call made while
    another backend is active fails with a message naming both (not deep inside the namespace)."""
    other = "array_api_strict" if backend == "numpy" else "numpy"
    ids = np.array([4, 1, 0])
    with B.use(backend):
        m = Block(grad.Generator(0)).eval()
        expected = m(grad.tensor(ids)).numpy()
        assert m.to(other) is m
        assert B.name() == backend                                      # to() left it as it was
        msg = (f"parameters are on backend '{other}' but the active backend is '{backend}'; "
               f"use grad.backend.use\\('{other}'\\)")
        with pytest.raises(RuntimeError, match=msg):
            m(grad.tensor(ids))
        with pytest.raises(RuntimeError, match="^Linear: parameters are on backend"):
            m.proj(grad.tensor(np.ones((1, 3), np.float32)))
        with B.use(other):
            np.testing.assert_allclose(m(grad.tensor(ids)).numpy(), expected, rtol=1e-6)
        m.to(backend)
        np.testing.assert_allclose(m(grad.tensor(ids)).numpy(), expected, rtol=1e-6)


# ------------------------------------------------------------------------ shapes and init
@backends
def test_linear_shapes_and_init(backend):
    with B.use(backend):
        lin = nn.Linear(16, 300, generator=grad.Generator(0))
        assert lin.weight.shape == (300, 16) and lin.bias.shape == (300,)
        k = 1 / math.sqrt(16)
        w = lin.weight.numpy()
        assert np.abs(w).max() <= k and np.abs(w).max() > 0.99 * k    # the whole range is used
        assert abs(w.mean()) < 0.02 and w.std() == pytest.approx(k / math.sqrt(3), rel=0.05)
        assert np.abs(lin.bias.numpy()).max() <= k
        assert B.dtype_name(lin.weight.dtype) == "float32"
        assert lin(grad.tensor(np.ones((2, 5, 16), np.float32))).shape == (2, 5, 300)
        assert nn.Linear(3, 2, bias=False).bias is None
        assert B.dtype_name(nn.Linear(2, 2, dtype="float64").weight.dtype) == "float64"
        same = nn.Linear(16, 300, generator=grad.Generator(0))
        np.testing.assert_array_equal(same.weight.numpy(), w)         # seeded: reproducible


@backends
def test_embedding_shapes_and_init(backend):
    with B.use(backend):
        emb = nn.Embedding(400, 20, padding_idx=-1, generator=grad.Generator(0))
        assert emb.weight.shape == (400, 20) and emb.padding_idx == 399
        w = emb.weight.numpy()
        np.testing.assert_array_equal(w[399], 0.0)
        rest = w[:399]
        assert abs(rest.mean()) < 0.03 and rest.std() == pytest.approx(1.0, rel=0.03)
        ids = grad.tensor(np.array([[1, 399], [2, 3]]))
        assert emb(ids).shape == (2, 2, 20)
        emb(ids).sum().backward()
        np.testing.assert_array_equal(host(emb.weight.grad)[399], 0.0)
        assert host(emb.weight.grad)[1].tolist() == [1.0] * 20


@backends
def test_lstm_shapes_and_init(backend):
    with B.use(backend):
        lstm = nn.LSTM(5, 8, num_layers=2, bidirectional=True, generator=grad.Generator(0))
        names = [n for n, _ in lstm.named_parameters()]
        expected = []
        for layer in range(2):
            for suffix in ("", "_reverse"):
                expected += [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}",
                             f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
        assert names == expected
        shapes = dict((n, p.shape) for n, p in lstm.named_parameters())
        assert shapes["weight_ih_l0"] == (32, 5) and shapes["weight_ih_l1_reverse"] == (32, 16)
        assert shapes["weight_hh_l1"] == (32, 8) and shapes["bias_hh_l0_reverse"] == (32,)
        k = 1 / math.sqrt(8)
        allw = np.concatenate([p.numpy().ravel() for p in lstm.parameters()])
        assert np.abs(allw).max() <= k and np.abs(allw).max() > 0.98 * k
        x = grad.tensor(np.zeros((7, 3, 5), np.float32))
        out, (h, c) = lstm(x)
        assert out.shape == (7, 3, 16) and h.shape == (4, 3, 8) and c.shape == (4, 3, 8)
        cell = nn.LSTMCell(5, 8, generator=grad.Generator(0))
        assert [p.shape for p in cell.parameters()] == [(32, 5), (32, 8), (32,), (32,)]
        h1, c1 = cell(grad.tensor(np.ones((3, 5), np.float32)))
        assert h1.shape == (3, 8) and c1.shape == (3, 8)
        assert "bidirectional=True" in repr(lstm)


# --------------------------------------------------------------------------- clipping
@backends
def test_clip_grad_norm(backend):
    with B.use(backend):
        a = nn.Parameter(grad.tensor(np.zeros(2)))
        b = nn.Parameter(grad.tensor(np.zeros((2, 2))))
        c = nn.Parameter(grad.tensor(np.zeros(3)))                    # no gradient: skipped
        a.grad = B.from_numpy(np.array([3.0, 0.0]))
        b.grad = B.from_numpy(np.array([[0.0, 4.0], [0.0, 12.0]]))
        norm = nn.utils.clip_grad_norm_([a, b, c], max_norm=6.5)
        assert isinstance(norm, grad.Tensor) and norm.item() == pytest.approx(13.0)
        total = math.sqrt(float((host(a.grad) ** 2).sum() + (host(b.grad) ** 2).sum()))
        assert total == pytest.approx(6.5, rel=1e-5)
        np.testing.assert_allclose(host(a.grad), [1.5, 0.0], rtol=1e-5)
        assert c.grad is None
        # below the limit: unchanged
        before = host(b.grad).copy()
        assert nn.utils.clip_grad_norm_([a, b], max_norm=100.0).item() == pytest.approx(6.5, rel=1e-5)
        np.testing.assert_array_equal(host(b.grad), before)
        assert nn.utils.clip_grad_norm_([c], 1.0).item() == 0.0


class _CupySignatures:
    """NumPy with CuPy's ``clip(a, a_min, a_max, out=None)``: no ``min=``/``max=`` keywords (NumPy
    2 and array_api_strict have them, CuPy does not). Stands in for CuPy where no GPU is."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def clip(a, a_min, a_max, out=None):
        return np.clip(a, a_min, a_max, out=out)


def test_clip_grad_norm_uses_only_calls_cupy_accepts(monkeypatch):
    with B.use("numpy"):
        monkeypatch.setattr(B, "xp", _CupySignatures())
        a = nn.Parameter(grad.tensor(np.zeros(2)))
        a.grad = np.array([3.0, 4.0])
        norm = nn.utils.clip_grad_norm_([a], max_norm=1.0)
        assert norm.item() == pytest.approx(5.0)
        np.testing.assert_allclose(a.grad, [0.6, 0.8], rtol=1e-5)


def test_eval_mode_restores_the_mode_it_found_even_after_an_error():
    from grad.nn.utils import eval_mode
    layer = grad.nn.Dropout(0.5)
    with eval_mode(layer) as m:
        assert m is layer and not layer.training
    assert layer.training
    layer.eval()
    with eval_mode(layer):
        assert not layer.training
    assert not layer.training                         # it was in eval mode: stays there
    layer.train()
    with pytest.raises(RuntimeError):
        with eval_mode(layer):
            raise RuntimeError("boom")
    assert layer.training
