"""The flat parameter buffer (grad/flat.py ``FlatParameters``) and what uses it: the parameters
live in one buffer (their ``data`` are views of it), gradients are gathered into one buffer,
``Adam`` steps over the buffers (equal to the per-parameter loop and to the reference formulas),
``clip_grad_norm_`` takes one norm, and whatever writes parameters or optimizer state
(``load_state_dict``, ``Module.to``, a rebinding optimizer, the MPI sum and broadcast) keeps
working; a backend without views falls back to the per-parameter loop."""
import numpy as np
import pytest

import grad
import grad.flat as flat_mod
from grad import backend as B
from grad import nn, optim
from grad.flat import FlatParameters, assign, flat_of
from helpers import backends


def _params(rng, shapes, dtype="float64"):
    return [nn.Parameter(grad.tensor(rng.normal(size=s).astype(dtype))) for s in shapes]


SHAPES = [(3, 4), (4,), (2, 3, 2), (5,)]


@backends
def test_parameters_live_in_the_buffer_both_ways(backend):
    assert flat_mod.pieces(0, 10) == [(0, 10)]
    assert flat_mod.pieces(3, 3 + 2 * flat_mod.CPU_CHUNK + 1) == [
        (3, 3 + flat_mod.CPU_CHUNK), (3 + flat_mod.CPU_CHUNK, 3 + 2 * flat_mod.CPU_CHUNK),
        (3 + 2 * flat_mod.CPU_CHUNK, 4 + 2 * flat_mod.CPU_CHUNK)]
    with B.use(backend):
        assert flat_mod.gives_views()                       # numpy, array_api_strict (cupy) do
        rng = np.random.default_rng(0)
        params = _params(rng, SHAPES)
        before = [p.numpy().copy() for p in params]
        flat = FlatParameters(params)
        assert tuple(flat.data.shape) == (12 + 4 + 12 + 5,) and flat.is_intact()
        for p, b in zip(params, before):
            np.testing.assert_array_equal(p.numpy(), b)       # same values, now views
        flat.data *= 2.0                                     # buffer -> parameters
        for p, b in zip(params, before):
            np.testing.assert_array_equal(p.numpy(), 2 * b)
        assign(params[1], B.from_numpy(np.full(4, 7.0)))     # parameter -> buffer
        assert params[1].data is flat.views[1]
        np.testing.assert_array_equal(B.to_numpy(flat.data)[12:16], 7.0)
        assert flat_of(params) is flat and flat_of(params[::-1]) is None


def test_refuses_duplicates_mixed_dtypes_and_a_backend_without_views(monkeypatch):
    rng = np.random.default_rng(0)
    p, q = _params(rng, [(2,), (3,)])
    with pytest.raises(ValueError, match="appears twice"):
        FlatParameters([p, p])
    r = _params(rng, [(2,)], dtype="float32")[0]
    with pytest.raises(ValueError, match="one dtype"):
        FlatParameters([p, r])
    assert not flat_mod.flattenable([p, r]) and not flat_mod.flattenable([p, p])
    monkeypatch.setitem(flat_mod._VIEWS, "numpy", False)
    with pytest.raises(ValueError, match="does not give views"):
        FlatParameters([p, q])
    assert optim.Adam([p, q], lr=0.1).flat is None              # the honest fall-back
    with pytest.raises(ValueError, match="does not give views"):
        optim.Adam([p, q], lr=0.1, flat=True)


@backends
def test_gather_grads_zeros_for_none_views_and_no_copy_the_second_time(backend):
    with B.use(backend):
        rng = np.random.default_rng(1)
        params = _params(rng, SHAPES)
        flat = FlatParameters(params)
        grads = [rng.normal(size=s) for s in SHAPES]
        for p, g in zip(params, grads):
            p.grad = B.from_numpy(g)
        params[2].grad = None
        buf = flat.gather_grads()
        host = B.to_numpy(buf)
        np.testing.assert_array_equal(host[:12], grads[0].ravel())
        np.testing.assert_array_equal(host[16:28], 0.0)           # no gradient: zeros
        assert params[2].grad is None
        assert params[0].grad is flat.grad_views[0]                # the gradients are views
        assert flat.gather_grads() is buf                          # nothing to copy again
        params[0].grad = params[0].grad + 1.0                      # a new gradient: new buffer
        assert flat.gather_grads() is not buf


def test_zero_grad_lets_the_flat_gradient_buffer_go():
    import gc
    import weakref
    rng = np.random.default_rng(1)
    layer = nn.Linear(3, 4, generator=grad.Generator(0), dtype="float64")
    for zero in (lambda opt: opt.zero_grad(), lambda opt: layer.zero_grad()):
        opt = optim.Adam(layer.parameters(), lr=0.1)
        layer(grad.tensor(rng.normal(size=(2, 3)))).sum().backward()
        buf = weakref.ref(opt.flat.gather_grads())
        opt.step()
        assert buf() is not None                               # the gradients are its views
        zero(opt)
        gc.collect()
        assert buf() is None and opt.flat.grad is None


def _adam_run(reference: bool, flat, steps=5, wd=0.0, rebind_at=None):
    """Adam over a frozen parameter (never a gradient), one that gets a gradient only on odd
    steps (its step count lags: the update is cut into runs), and one of the model that is not
    given to the optimizer (absent: must not move)."""
    rng = np.random.default_rng(3)
    params = _params(rng, SHAPES)
    absent = _params(rng, [(3,)])[0]
    absent_before = absent.numpy().copy()
    params[3].requires_grad = False                            # frozen
    opt = optim.Adam(params, lr=0.05, betas=(0.8, 0.9), weight_decay=wd, flat=flat)
    for step in range(steps):
        for i, p in enumerate(params):
            has = p.requires_grad and (i != 1 or step % 2 == 1)
            p.grad = B.from_numpy(rng.normal(size=p.shape)) if has else None
        if step == rebind_at:                                  # something rebinds .data
            params[0].data = params[0].data * 1.0
        with grad.reference_mode(reference):
            opt.step()
    np.testing.assert_array_equal(absent.numpy(), absent_before)
    return opt, [p.numpy().copy() for p in params] + \
        [B.to_numpy(s[k]).copy() for s in opt.state if s for k in ("exp_avg", "exp_avg_sq")]


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [None, 5], ids=["one-piece", "pieces-of-5"])
def test_flat_adam_equals_the_loop_and_the_reference_over_several_steps(wd, chunk, monkeypatch):
    if chunk:                  # the passes cut into pieces that straddle the parameters
        monkeypatch.setattr(flat_mod, "CPU_CHUNK", chunk)
    opt_flat, fast = _adam_run(False, None, wd=wd)
    assert opt_flat.flat is not None
    assert opt_flat.state[3] == {} and opt_flat.state[1]["step"] == 2 and opt_flat.state[0]["step"] == 5
    _, loop = _adam_run(False, False, wd=wd)
    _, reference = _adam_run(True, None, wd=wd)
    _, rebound = _adam_run(False, None, wd=wd, rebind_at=2)      # reattached, same result
    assert len(fast) == len(loop) == len(reference) == 4 + 2 * 3
    for a, b, c, d in zip(fast, loop, reference, rebound):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a, c, rtol=0, atol=1e-10)
        np.testing.assert_allclose(a, d, rtol=0, atol=1e-12)
    for p, view in zip(opt_flat.params, opt_flat.flat.views):
        assert p.data is view                                  # still in the buffer


def test_flat_bias_correction_is_used():
    """One step of Adam moves every coordinate by about lr whatever the gradient's scale (the
    bias correction at t = 1): a flat step that forgot it would move by lr * (1 - b1) / ..."""
    p = nn.Parameter(grad.tensor(np.zeros(4)))
    opt = optim.Adam([p], lr=0.01, flat=True)
    p.grad = B.from_numpy(np.array([1e-3, -2.0, 50.0, 3.0]))
    opt.step()
    np.testing.assert_allclose(p.numpy(), [-0.01, 0.01, -0.01, -0.01], rtol=1e-4)


def test_state_dict_round_trips_between_flat_and_loop_optimizers():
    rng = np.random.default_rng(5)
    grads = [[rng.normal(size=s) for s in SHAPES] for _ in range(6)]

    def run(flat_first, flat_second):
        ps = _params(np.random.default_rng(9), SHAPES)
        opt = optim.Adam(ps, lr=0.02, flat=flat_first)
        for g in grads[:3]:
            for p, gi in zip(ps, g):
                p.grad = B.from_numpy(gi)
            opt.step()
        saved = opt.state_dict()
        assert [sorted(s) for s in saved["state"]] == [["exp_avg", "exp_avg_sq", "step"]] * 4
        assert all(tuple(s["exp_avg"].shape) == p.shape for s, p in zip(saved["state"], ps))
        opt2 = optim.Adam(ps, lr=0.02, flat=flat_second)
        opt2.load_state_dict(saved)
        for g in grads[3:]:
            for p, gi in zip(ps, g):
                p.grad = B.from_numpy(gi)
            opt2.step()
        if opt.flat is not None:                               # a snapshot: copies
            assert not any(np.shares_memory(B.to_numpy(s["exp_avg"]), B.to_numpy(opt._m))
                           for s in saved["state"])
        return [p.numpy().copy() for p in ps]

    base = run(False, False)
    for combo in [(True, True), (True, False), (False, True)]:
        for a, b in zip(base, run(*combo)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunk", [None, 7], ids=["one-piece", "pieces-of-7"])
def test_clip_over_the_flat_buffer_equals_the_reference(chunk, monkeypatch):
    if chunk:
        monkeypatch.setattr(flat_mod, "CPU_CHUNK", chunk)
    rng = np.random.default_rng(2)
    results = []
    for reference in (False, True):
        params = _params(np.random.default_rng(4), SHAPES)
        optim.Adam(params, lr=0.1)                             # flattens them
        for p in params:
            p.grad = B.from_numpy(rng.normal(size=p.shape) * 3)
        params[1].grad = None
        with grad.reference_mode(reference):
            norm = nn.utils.clip_grad_norm_(params, 1.0).item()
        results.append((norm, [None if p.grad is None else B.to_numpy(p.grad).copy() for p in params]))
        rng = np.random.default_rng(2)
    (n_fast, g_fast), (n_ref, g_ref) = results
    assert n_fast == pytest.approx(n_ref, rel=1e-12) and n_fast > 1.0
    assert g_fast[1] is None and g_ref[1] is None
    for a, b in zip(g_fast, g_ref):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12)
    total = np.sqrt(sum(float(np.sum(g ** 2)) for g in g_fast if g is not None))
    assert total == pytest.approx(1.0, rel=1e-5)               # clipped to max_norm


def test_module_load_state_dict_and_to_keep_the_flat_optimizer_right():
    from minis2s.lm.training import build_lstm_lm
    cfg = dict(vocab_size=10, emb_size=8, hidden_size=8, num_layers=1, dropout=0.0, pad_idx=0,
               tie_weights=True)
    model = build_lstm_lm(cfg, seed=1, dtype="float32")
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    assert len({id(p) for p in params}) == len(params)         # a tied weight appears once
    opt = optim.Adam(model.parameters(), lr=0.01)
    assert opt.flat is not None and opt.flat.total == sum(p.numel() for p in params)
    other = build_lstm_lm(cfg, seed=2, dtype="float32")
    model.load_state_dict(other.state_dict())                  # written INTO the views
    assert opt.flat.is_intact()
    for (n, p), q in zip(model.named_parameters(), other.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    model.to("float64")                                        # leaves the buffer: rebuilt
    for p in params:
        p.grad = B.from_numpy(np.ones(p.shape))
    opt.step()
    assert opt.flat.is_intact() and opt.flat.data.dtype == B.get_dtype("float64")
    assert all(p.dtype == B.get_dtype("float64") for p in params), names


class _FakeMPI:
    SUM, IN_PLACE = "sum", "in-place"


class _FakeComm:
    """Two ranks that hold the same gradients: the Allreduce doubles what it is given, and
    records the arrays it was handed."""

    def __init__(self, other_counts=None):
        self.seen, self.other_counts = [], other_counts

    def Allreduce(self, inplace, buf, op):
        self.seen.append(buf)
        if buf.dtype == np.int64 and self.other_counts is not None:
            buf += np.asarray(self.other_counts, dtype=np.int64)
        else:
            buf *= 2

    def Bcast(self, buf, root=0):
        self.seen.append(buf)
        buf[...] = 5.0


def _communicator(fake):
    from minis2s.distributed import Communicator
    comm = Communicator.__new__(Communicator)
    comm.MPI, comm.mpi, comm.rank, comm.size = _FakeMPI, fake, 0, 2
    comm._layouts, comm.last_allreduce_s, comm.last_bytes = {}, 0.0, 0
    return comm


def test_mpi_sum_and_broadcast_work_in_place_on_the_flat_buffers():
    rng = np.random.default_rng(6)
    params = _params(rng, SHAPES)
    opt = optim.Adam(params, lr=0.1)
    grads = [rng.normal(size=s) for s in SHAPES]
    for p, g in zip(params, grads):
        p.grad = B.from_numpy(g)
    params[2].grad = None                                      # none here, one on the other rank
    fake = _FakeComm(other_counts=[1, 1, 1, 0])
    comm = _communicator(fake)
    comm.sum_gradients(params)
    big = [b for b in fake.seen if b.dtype != np.int64]
    assert len(big) == 1 and big[0] is opt.flat.grad            # the buffer itself, no copy
    for i, (p, g) in enumerate(zip(params, grads)):
        assert p.grad is opt.flat.grad_views[i]
        np.testing.assert_array_equal(B.to_numpy(p.grad), 0.0 if i == 2 else 2 * g)
    fake2 = _FakeComm(other_counts=[1, 1, 0, 0])               # no rank had a gradient of #3
    params[2].grad = None
    _communicator(fake2).sum_gradients(params)
    assert params[2].grad is None
    comm.broadcast_parameters(params)
    assert fake.seen[-1] is opt.flat.data and opt.flat.is_intact()
    assert all(float(np.max(np.abs(p.numpy() - 5.0))) == 0.0 for p in params)


def test_a_deep_copy_of_a_flattened_model_is_in_no_buffer():
    import copy
    rng = np.random.default_rng(8)
    params = _params(rng, SHAPES)
    flat = FlatParameters(params)
    clones = copy.deepcopy(params)
    assert all(getattr(c, "_flat", None) is None for c in clones)
    assign(clones[0], B.from_numpy(np.zeros((3, 4))))          # rebinds the copy only
    assert flat_of(clones) is None and float(np.abs(params[0].numpy()).sum()) > 0
    np.testing.assert_array_equal(clones[0].numpy(), 0.0)
    assert flat.is_intact()
