"""Optimizers: SGD (with and without momentum) and Adam against steps computed by hand, state
round trips (resume gives identical steps), and PyTorch's trajectories when it is installed."""
import json
import math

import numpy as np
import pytest

import grad
import grad.nn as nn
from grad import backend as B
from grad.optim import SGD, Adam
from helpers import backends


def host(a):
    return B.to_numpy(a)


def param(values):
    return nn.Parameter(grad.tensor(np.asarray(values, dtype=np.float64)))


def set_grad(p, values):
    p.grad = B.from_numpy(np.asarray(values, dtype=np.float64))


@backends
def test_sgd_plain_steps(backend):
    with B.use(backend):
        p, q = param([1.0, -2.0]), param([3.0])
        opt = SGD([p, q], lr=0.1)
        set_grad(p, [0.5, 1.0])
        opt.step()                                  # q has no gradient: untouched
        np.testing.assert_allclose(p.numpy(), [0.95, -2.1], rtol=1e-15)
        assert q.numpy().tolist() == [3.0]
        set_grad(p, [-1.0, 2.0])
        opt.step()
        np.testing.assert_allclose(p.numpy(), [1.05, -2.3], rtol=1e-15)
        opt.zero_grad()
        assert p.grad is None


@backends
def test_sgd_momentum_and_weight_decay_steps(backend):
    with B.use(backend):
        p = param([1.0, 2.0])
        opt = SGD([p], lr=0.5, momentum=0.9, weight_decay=0.1)
        grads = [[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]
        x, buf = np.array([1.0, 2.0]), None
        for g in grads:
            set_grad(p, g)
            opt.step()
            d = np.array(g) + 0.1 * x                              # by hand
            buf = d if buf is None else 0.9 * buf + d
            x = x - 0.5 * buf
            np.testing.assert_allclose(p.numpy(), x, rtol=1e-14)
        np.testing.assert_allclose(host(opt.state[0]["momentum_buffer"]), buf, rtol=1e-14)


@backends
@pytest.mark.parametrize("flat", [False, True], ids=["per-parameter", "flat"])
def test_adam_steps(backend, flat):
    with B.use(backend):
        p = param([1.0, -1.0, 0.5])
        opt = Adam([p], lr=0.01, betas=(0.8, 0.95), eps=1e-8, flat=flat)
        assert (opt.flat is not None) == flat
        grads = [[0.2, -3.0, 0.0], [0.1, 1.0, 0.5], [-0.4, 2.0, 0.5]]
        x = [1.0, -1.0, 0.5]
        m, v = [0.0] * 3, [0.0] * 3
        for t, g in enumerate(grads, start=1):
            set_grad(p, g)
            opt.step()
            for i in range(3):                                      # by hand, one scalar at a time
                m[i] = 0.8 * m[i] + 0.2 * g[i]
                v[i] = 0.95 * v[i] + 0.05 * g[i] ** 2
                m_hat, v_hat = m[i] / (1 - 0.8 ** t), v[i] / (1 - 0.95 ** t)
                x[i] -= 0.01 * m_hat / (math.sqrt(v_hat) + 1e-8)
            np.testing.assert_allclose(p.numpy(), x, rtol=1e-13)
        assert opt.state[0]["step"] == 3
        # first step of Adam moves each coordinate by about lr, whatever the gradient's scale
        q = param([0.0, 0.0])
        opt2 = Adam([q], lr=0.1, flat=flat)
        set_grad(q, [1e-3, -50.0])
        opt2.step()
        np.testing.assert_allclose(q.numpy(), [-0.1, 0.1], rtol=1e-4)


def _quadratic_grads(p, k):
    """A gradient that depends on the parameter and the step (so trajectories diverge if wrong)."""
    x = host(p.data)
    return np.cos(x * (k + 1)) + 0.3 * x


@backends
@pytest.mark.parametrize("make_opt", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: SGD(ps, lr=0.05, weight_decay=0.01),
    lambda ps: Adam(ps, lr=0.05, weight_decay=0.1, flat=False),
    lambda ps: Adam(ps, lr=0.05, weight_decay=0.1, flat=True),
], ids=["sgd-momentum", "sgd", "adam", "adam-flat"])
def test_state_dict_resume_gives_identical_steps(backend, make_opt):
    with B.use(backend):
        def run(n_steps, opt, ps, start=0):
            for k in range(start, start + n_steps):
                for p in ps:
                    set_grad(p, _quadratic_grads(p, k))
                opt.step()

        ps = [param([0.3, -0.7]), param([[1.0, 2.0], [3.0, -4.0]])]
        opt = make_opt(ps)
        run(3, opt, ps)
        # save as a checkpoint would: host arrays and plain numbers, through JSON for the numbers
        saved_params = [host(p.data).copy() for p in ps]
        sd = opt.state_dict()
        saved = {"param_groups": json.loads(json.dumps(sd["param_groups"])),
                 "state": [{k: (host(v).copy() if hasattr(v, "shape") else v) for k, v in s.items()}
                           for s in sd["state"]]}
        run(4, opt, ps, start=3)
        expected = [host(p.data).copy() for p in ps]

        fresh = [param(a) for a in saved_params]
        opt2 = make_opt(fresh)
        opt2.lr = 123.0                                     # overwritten by the saved groups
        opt2.load_state_dict(saved)
        assert opt2.lr == opt.lr
        run(4, opt2, fresh, start=3)
        for a, p in zip(expected, fresh):
            np.testing.assert_array_equal(host(p.data), a)


@backends
def test_optimizer_errors(backend):
    with B.use(backend):
        p = param([1.0, 2.0])
        with pytest.raises(ValueError, match="empty"):
            SGD([], lr=0.1)
        with pytest.raises(ValueError, match="learning rate"):
            SGD([p], lr=0.0)
        with pytest.raises(ValueError, match="momentum"):
            SGD([p], lr=0.1, momentum=-1)
        with pytest.raises(ValueError, match="betas"):
            Adam([p], betas=(1.0, 0.9))
        opt = Adam([p])
        set_grad(p, [1.0, 1.0])
        opt.step()
        sd = opt.state_dict()
        with pytest.raises(ValueError, match="2 parameters|1 parameters"):
            Adam([p, param([1.0])]).load_state_dict(sd)
        with pytest.raises(ValueError, match="shape"):
            Adam([param([1.0, 2.0, 3.0])]).load_state_dict(sd)


# ------------------------------------------------------------------------ PyTorch oracle
@pytest.mark.parametrize("kind", ["sgd", "sgd-momentum", "adam"])
def test_trajectories_match_torch(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(3, 4)), rng.normal(size=(3,))
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))

    tw = torch.tensor(w0, requires_grad=True)
    tb = torch.tensor(b0, requires_grad=True)
    gw, gb = param(w0), param(b0)
    if kind == "adam":
        topt = torch.optim.Adam([tw, tb], lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
        gopt = Adam([gw, gb], lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    else:
        mu = 0.9 if kind == "sgd-momentum" else 0.0
        topt = torch.optim.SGD([tw, tb], lr=0.1, momentum=mu, weight_decay=0.01)
        gopt = SGD([gw, gb], lr=0.1, momentum=mu, weight_decay=0.01)
    tx, ty = torch.tensor(x), torch.tensor(y)
    gx, gy = grad.tensor(x), grad.tensor(y)
    for _ in range(5):
        topt.zero_grad()
        ((torch.tanh(tx @ tw.T + tb) - ty) ** 2).mean().backward()
        topt.step()
        gopt.zero_grad()
        ((grad.tanh(gx @ gw.T + gb) - gy) ** 2).mean().backward()
        gopt.step()
        np.testing.assert_allclose(gw.numpy(), tw.detach().numpy(), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(gb.numpy(), tb.detach().numpy(), rtol=1e-12, atol=1e-13)


@backends
def test_adam_state_dict_is_a_snapshot_that_later_steps_do_not_change(backend):
    # Adam updates its moment estimates in place; a state_dict taken earlier must not move.
    with B.use(backend):
        w = grad.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
        opt = Adam([w], lr=0.1)
        for _ in range(2):
            (w * w).sum().backward()
            opt.step()
            opt.zero_grad()
        saved = opt.state_dict()
        before = B.to_numpy(saved["state"][0]["exp_avg"]).copy()
        (w * w).sum().backward()
        opt.step()
        np.testing.assert_array_equal(B.to_numpy(saved["state"][0]["exp_avg"]), before)
        assert not np.array_equal(B.to_numpy(opt.state[0]["exp_avg"]), before)
