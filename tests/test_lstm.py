"""The LSTM: gradient checks of the fused step, the cell and the whole layer (every parameter),
fused against composed, padding invariance with ``lengths``, and ``torch.nn.LSTM`` as an oracle."""
import numpy as np
import pytest

import grad
import grad.functional as F
import grad.nn as nn
from grad import backend as B
from helpers import backends


def host(a):
    return B.to_numpy(a)


def rand(shape, seed, scale=1.0):
    return np.random.default_rng(seed).uniform(-scale, scale, shape)


def leaf(shape, seed, scale=1.0):
    return grad.tensor(rand(shape, seed, scale), requires_grad=True)


def layer_outputs(lstm, x, **kwargs):
    out, (h, c) = lstm(x, **kwargs)
    return out, h, c


# ------------------------------------------------------------------------ gradient checks
@backends
def test_gradcheck_lstm_step_and_cell(backend):
    with B.use(backend):
        n_batch, n_hidden, n_in = 3, 2, 3
        x_gates, state = leaf((n_batch, 4 * n_hidden), 1), leaf((n_batch, 2 * n_hidden), 2)
        w_hh = leaf((4 * n_hidden, n_hidden), 3)
        mask = grad.tensor(np.array([[1.0], [0.0], [1.0]]))
        assert grad.gradcheck(lambda a, s, w: F.lstm_step(a, s, w), [x_gates, state, w_hh])
        assert grad.gradcheck(lambda a, s, w: F.lstm_step(a, s, w, mask), [x_gates, state, w_hh])

        cell = nn.LSTMCell(n_in, n_hidden, generator=grad.Generator(0), dtype="float64")
        x, h, c = leaf((n_batch, n_in), 4), leaf((n_batch, n_hidden), 5), leaf((n_batch, n_hidden), 6)
        assert grad.gradcheck(lambda x, h, c: cell(x, (h, c)), [x, h, c], params=list(cell.parameters()))
        assert grad.gradcheck(lambda x: cell(x), [x], params=list(cell.parameters()))


@backends
def test_gradcheck_lstm_layer_two_layers_bidirectional_with_lengths(backend):
    with B.use(backend):
        lstm = nn.LSTM(2, 2, num_layers=2, bidirectional=True, batch_first=True,
                       generator=grad.Generator(0), dtype="float64")
        x = leaf((2, 3, 2), 1)
        lengths = grad.tensor(np.array([3, 2]))
        assert grad.gradcheck(lambda x: layer_outputs(lstm, x, lengths=lengths), [x],
                              params=list(lstm.parameters()))


@backends
def test_gradcheck_lstm_layer_initial_state(backend):
    with B.use(backend):
        lstm = nn.LSTM(2, 2, num_layers=1, bidirectional=True, generator=grad.Generator(1),
                       dtype="float64")
        x, h0, c0 = leaf((3, 2, 2), 1), leaf((2, 2, 2), 2), leaf((2, 2, 2), 3)
        assert grad.gradcheck(lambda x, h0, c0: layer_outputs(lstm, x, hx=(h0, c0)), [x, h0, c0],
                              params=list(lstm.parameters()))


# ------------------------------------------------------------------------ fused vs composed
@backends
@pytest.mark.parametrize("with_bias", [True, False])
def test_fused_cell_equals_composed_cell(backend, with_bias):
    with B.use(backend):
        n_batch, n_in, n_hidden = 3, 4, 5
        seeds = iter(range(100))
        inputs = [leaf(s, next(seeds), 1.5) for s in
                  [(n_batch, n_in), (n_batch, n_hidden), (n_batch, n_hidden),
                   (4 * n_hidden, n_in), (4 * n_hidden, n_hidden)]]
        if with_bias:
            inputs += [leaf((4 * n_hidden,), next(seeds)), leaf((4 * n_hidden,), next(seeds))]
        vh, vc = rand((n_batch, n_hidden), 50), rand((n_batch, n_hidden), 51)
        results = []
        for fn in (F.lstm_cell, F.lstm_cell_reference):
            for t in inputs:
                t.grad = None
            h, c = fn(*inputs)
            ((h * grad.tensor(vh)).sum() + (c * grad.tensor(vc)).sum()).backward()
            results.append(([host(h.data), host(c.data)], [host(t.grad) for t in inputs]))
        (outs_a, grads_a), (outs_b, grads_b) = results
        for a, b in zip(outs_a + grads_a, outs_b + grads_b):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------ padding and lengths
@backends
@pytest.mark.parametrize("batch_first", [True, False])
def test_padding_does_not_change_a_sequence(backend, batch_first):
    """A length-3 sequence alone equals the same sequence padded to 6 in a batch with a longer
    one (outputs, final states and gradients); outputs at padding are exactly zero."""
    with B.use(backend):
        lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first,
                       generator=grad.Generator(0), dtype="float64")
        seq = rand((3, 3), 1)
        batch = rand((2, 6, 3), 2) * 5.0                 # garbage in the padding of row 0
        batch[0, :3] = seq
        v_out, v_h = rand((3, 8), 3), rand((4, 4), 4)

        def to_layout(a):                                # (B, T, in) -> the layer's layout
            return a if batch_first else np.swapaxes(a, 0, 1).copy()

        def run(x_np, lengths, row):
            lstm.zero_grad()
            x = grad.tensor(to_layout(x_np), requires_grad=True)
            out, (h, c) = lstm(x, lengths=lengths)
            out_bt = out if batch_first else out.transpose(0, 1)          # (B, T, 2H)
            loss = (out_bt[row, :3] * grad.tensor(v_out)).sum() + (h[:, row] * grad.tensor(v_h)).sum() \
                + (c[:, row] * grad.tensor(v_h)).sum()
            loss.backward()
            gx = host(x.grad) if batch_first else np.swapaxes(host(x.grad), 0, 1)
            return (host(out_bt.data), host(h.data)[:, row], host(c.data)[:, row], gx,
                    {n: host(p.grad) for n, p in lstm.named_parameters()})

        out1, h1, c1, gx1, gp1 = run(seq[None], None, 0)
        out2, h2, c2, gx2, gp2 = run(batch, grad.tensor(np.array([3, 6])), 0)
        np.testing.assert_allclose(out2[0, :3], out1[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(out2[0, 3:], 0.0)                  # exactly zero at padding
        assert np.abs(out2[1]).min() > 0                                  # the full row is not masked
        np.testing.assert_allclose(h2, h1, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(c2, c1, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gx2[0, :3], gx1[0], rtol=1e-10, atol=1e-13)
        np.testing.assert_array_equal(gx2[0, 3:], 0.0)                    # padding gets no gradient
        np.testing.assert_array_equal(gx2[1], 0.0)                        # nor does the other row
        for name in gp1:
            np.testing.assert_allclose(gp2[name], gp1[name], rtol=1e-10, atol=1e-13, err_msg=name)


@backends
def test_initial_state_with_lengths_equals_each_sentence_run_alone(backend):
    """``hx`` and ``lengths`` together: every sentence of a padded batch gives what it gives when
    run alone, unpadded, from its own initial state (outputs, final states and the gradients of
    its initial state); outputs at padding are zero."""
    with B.use(backend):
        lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True,
                       generator=grad.Generator(2), dtype="float64")
        lengths = np.array([2, 5, 4])
        x = rand((3, 5, 3), 1)
        h0, c0 = rand((4, 3, 4), 2), rand((4, 3, 4), 3)
        v_out, v_h, v_c = rand((3, 5, 8), 4), rand((4, 3, 4), 5), rand((4, 3, 4), 6)

        def run(x_np, h0_np, c0_np, v_out, v_h, v_c, lengths=None):
            hx = (grad.tensor(h0_np, requires_grad=True), grad.tensor(c0_np, requires_grad=True))
            out, (h, c) = lstm(grad.tensor(x_np), hx=hx,
                               lengths=None if lengths is None else grad.tensor(lengths))
            ((out * grad.tensor(v_out)).sum() + (h * grad.tensor(v_h)).sum()
             + (c * grad.tensor(v_c)).sum()).backward()
            return out.numpy(), h.numpy(), c.numpy(), host(hx[0].grad), host(hx[1].grad)

        out, h, c, gh0, gc0 = run(x, h0, c0, v_out, v_h, v_c, lengths)
        assert np.abs(h - run(x, 0 * h0, 0 * c0, v_out, v_h, v_c, lengths)[1]).max() > 1e-3
        tol = dict(rtol=1e-12, atol=1e-14)
        for b, n in enumerate(lengths):
            rows = slice(b, b + 1)
            alone = run(x[rows, :n], h0[:, rows], c0[:, rows], v_out[rows, :n], v_h[:, rows], v_c[:, rows])
            np.testing.assert_allclose(out[b, :n], alone[0][0], **tol)
            np.testing.assert_array_equal(out[b, n:], 0.0)
            np.testing.assert_allclose(h[:, b], alone[1][:, 0], **tol)
            np.testing.assert_allclose(c[:, b], alone[2][:, 0], **tol)
            np.testing.assert_allclose(gh0[:, b], alone[3][:, 0], rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(gc0[:, b], alone[4][:, 0], rtol=1e-10, atol=1e-13)


@backends
def test_lstm_argument_errors(backend):
    with B.use(backend):
        lstm = nn.LSTM(3, 2, batch_first=True)
        x = grad.tensor(np.zeros((2, 4, 3), np.float32))
        with pytest.raises(ValueError, match="input of shape"):
            lstm(grad.tensor(np.zeros((2, 4, 5), np.float32)))
        with pytest.raises(ValueError, match="at least one time step"):     # T = 0, batch first
            lstm(grad.tensor(np.zeros((2, 0, 3), np.float32)))
        with pytest.raises(ValueError, match="at least one time step"):     # T = 0, time major
            nn.LSTM(3, 2)(grad.tensor(np.zeros((0, 2, 3), np.float32)))
        with pytest.raises(ValueError, match="lengths must be in"):
            lstm(x, lengths=grad.tensor(np.array([5, 1])))
        with pytest.raises(ValueError, match="lengths must have shape"):
            lstm(x, lengths=[1, 2, 3])
        bad = grad.tensor(np.zeros((2, 2, 2), np.float32))
        with pytest.raises(ValueError, match="hx must be"):
            lstm(x, hx=(bad, bad))
        with pytest.raises(ValueError, match="dropout"):
            nn.LSTM(3, 2, dropout=2.0)
        # an empty sequence (length 0) gives zeros, not NaN
        out, (h, c) = lstm(x, lengths=[0, 4])
        assert not out.numpy()[0].any() and not h.numpy()[:, 0].any() and not c.numpy()[:, 0].any()
        assert np.abs(out.numpy()[1]).min() > 0


@backends
def test_dropout_between_layers_only_in_training(backend):
    with B.use(backend):
        lstm = nn.LSTM(2, 3, num_layers=2, dropout=0.5, generator=grad.Generator(0))
        x = grad.tensor(rand((4, 2, 2), 0).astype(np.float32))
        lstm.eval()
        a, b = lstm(x)[0].numpy(), lstm(x)[0].numpy()
        np.testing.assert_array_equal(a, b)
        lstm.train()
        c = lstm(x)[0].numpy()
        assert not np.allclose(a, c)
        one = nn.LSTM(2, 3, num_layers=1, dropout=0.5, generator=grad.Generator(0))
        np.testing.assert_array_equal(one(x)[0].numpy(), one.eval()(x)[0].numpy())  # last layer: none


# ------------------------------------------------------------------------ PyTorch oracle
def _copy_from_torch(tlstm, glstm):
    state = {name: p.detach().numpy() for name, p in tlstm.named_parameters()}
    assert list(state) == [n for n, _ in glstm.named_parameters()]
    glstm.load_state_dict(state)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("use_lengths", [False, True])
def test_lstm_matches_torch(bidirectional, batch_first, use_lengths):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    torch.manual_seed(0)
    n_in, n_hidden, n_layers, n_batch, n_steps = 3, 4, 2, 3, 5
    tl = torch.nn.LSTM(n_in, n_hidden, n_layers, batch_first=batch_first,
                       bidirectional=bidirectional).double()
    gl = nn.LSTM(n_in, n_hidden, n_layers, batch_first=batch_first, bidirectional=bidirectional,
                 dtype="float64")
    _copy_from_torch(tl, gl)
    shape = (n_batch, n_steps, n_in) if batch_first else (n_steps, n_batch, n_in)
    x = rand(shape, 1)
    lengths = np.array([2, 5, 4])
    n_dir = 2 if bidirectional else 1
    v_out = rand(shape[:2] + (n_hidden * n_dir,), 2)
    v_h, v_c = rand((n_layers * n_dir, n_batch, n_hidden), 3), rand((n_layers * n_dir, n_batch, n_hidden), 4)

    tx = torch.tensor(x, requires_grad=True)
    if use_lengths:
        packed = pack_padded_sequence(tx, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        tout, (th, tc) = tl(packed)
        tout, _ = pad_packed_sequence(tout, batch_first=batch_first, total_length=n_steps)
    else:
        tout, (th, tc) = tl(tx)
    ((tout * torch.tensor(v_out)).sum() + (th * torch.tensor(v_h)).sum()
     + (tc * torch.tensor(v_c)).sum()).backward()

    gx = grad.tensor(x, requires_grad=True)
    gout, (gh, gc) = gl(gx, lengths=grad.tensor(lengths) if use_lengths else None)
    ((gout * grad.tensor(v_out)).sum() + (gh * grad.tensor(v_h)).sum()
     + (gc * grad.tensor(v_c)).sum()).backward()

    tol = dict(rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gout.numpy(), tout.detach().numpy(), **tol)
    np.testing.assert_allclose(gh.numpy(), th.detach().numpy(), **tol)
    np.testing.assert_allclose(gc.numpy(), tc.detach().numpy(), **tol)
    np.testing.assert_allclose(gx.grad, tx.grad.numpy(), **tol)
    for (name, p), (tname, tp) in zip(gl.named_parameters(), tl.named_parameters()):
        assert name == tname
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), err_msg=name, **tol)


def test_lstm_with_initial_state_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    tl = torch.nn.LSTM(2, 3, 2, bidirectional=True).double()
    gl = nn.LSTM(2, 3, 2, bidirectional=True, dtype="float64")
    _copy_from_torch(tl, gl)
    x, h0, c0 = rand((4, 2, 2), 1), rand((4, 2, 3), 2), rand((4, 2, 3), 3)
    tout, (th, tc) = tl(torch.tensor(x), (torch.tensor(h0), torch.tensor(c0)))
    gout, (gh, gc) = gl(grad.tensor(x), hx=(grad.tensor(h0), grad.tensor(c0)))
    for a, b in ((gout, tout), (gh, th), (gc, tc)):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch_first", [False, True])
def test_lstm_with_initial_state_and_lengths_matches_torch_on_packed_sequences(batch_first):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    torch.manual_seed(2)
    tl = torch.nn.LSTM(3, 4, 2, batch_first=batch_first, bidirectional=True).double()
    gl = nn.LSTM(3, 4, 2, batch_first=batch_first, bidirectional=True, dtype="float64")
    _copy_from_torch(tl, gl)
    shape = (3, 5, 3) if batch_first else (5, 3, 3)
    x, h0, c0 = rand(shape, 1), rand((4, 3, 4), 2), rand((4, 3, 4), 3)
    lengths = np.array([2, 5, 4])
    v_out, v_h, v_c = rand(shape[:2] + (8,), 4), rand((4, 3, 4), 5), rand((4, 3, 4), 6)

    th0, tc0 = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    packed = pack_padded_sequence(torch.tensor(x), torch.tensor(lengths), batch_first=batch_first,
                                  enforce_sorted=False)
    tout, (th, tc) = tl(packed, (th0, tc0))
    tout, _ = pad_packed_sequence(tout, batch_first=batch_first, total_length=5)
    ((tout * torch.tensor(v_out)).sum() + (th * torch.tensor(v_h)).sum()
     + (tc * torch.tensor(v_c)).sum()).backward()

    gh0, gc0 = grad.tensor(h0, requires_grad=True), grad.tensor(c0, requires_grad=True)
    gout, (gh, gc) = gl(grad.tensor(x), hx=(gh0, gc0), lengths=grad.tensor(lengths))
    ((gout * grad.tensor(v_out)).sum() + (gh * grad.tensor(v_h)).sum()
     + (gc * grad.tensor(v_c)).sum()).backward()

    tol = dict(rtol=1e-8, atol=1e-10)
    for ours, theirs in ((gout.numpy(), tout), (gh.numpy(), th), (gc.numpy(), tc),
                         (host(gh0.grad), th0.grad), (host(gc0.grad), tc0.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), **tol)
    for (name, p), (_, tp) in zip(gl.named_parameters(), tl.named_parameters()):
        np.testing.assert_allclose(host(p.grad), tp.grad.numpy(), err_msg=name, **tol)


# ------------------------------------------------------------------------ the public step API
@backends
def test_cell_steps_reproduce_forward_over_a_sequence(backend):
    """``layer_weights(k)`` and ``cell(k, x_t, (h, c))``, stepped layer by layer and time step by
    time step (reverse direction backwards in time), give ``LSTM.forward``'s outputs, final
    states and parameter gradients."""
    with B.use(backend):
        lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True,
                       generator=grad.Generator(0), dtype="float64")
        x = grad.tensor(rand((2, 5, 3), 7))                                # (B, T, in)
        v = grad.tensor(rand((2, 5, 8), 8))                                # cotangent
        out, (h_n, c_n) = lstm(x)
        (out * v).sum().backward()
        fused_grads = {n: host(p.grad) for n, p in lstm.named_parameters()}
        lstm.zero_grad()

        n_batch, n_steps = 2, 5
        layer_input, finals = [x[:, t] for t in range(n_steps)], []
        for k in range(2):
            w_ih, w_hh, b_ih, b_hh = lstm.layer_weights(k)
            assert w_ih is lstm.weight_ih_l0 if k == 0 else w_ih is lstm.weight_ih_l1
            assert tuple(w_ih.shape) == (16, 3 if k == 0 else 8) and tuple(b_hh.shape) == (16,)
            per_direction = []
            for reverse in (False, True):
                h = c = grad.zeros(n_batch, 4, dtype=grad.float64)
                outs = [None] * n_steps
                for t in (range(n_steps - 1, -1, -1) if reverse else range(n_steps)):
                    h, c = lstm.cell(k, layer_input[t], (h, c), reverse=reverse)   # (B, H) each
                    outs[t] = h
                finals.append((h, c))
                per_direction.append(outs)
            layer_input = [grad.cat([f, r], dim=1) for f, r in zip(*per_direction)]   # (B, 2H)
        stepped = grad.stack(layer_input, dim=1)                           # (B, T, 2H)
        np.testing.assert_allclose(host(stepped.data), host(out.data), rtol=0, atol=1e-12)
        np.testing.assert_allclose(host(grad.stack([h for h, _ in finals]).data), host(h_n.data), atol=1e-12)
        np.testing.assert_allclose(host(grad.stack([c for _, c in finals]).data), host(c_n.data), atol=1e-12)
        (stepped * v).sum().backward()
        for name, p in lstm.named_parameters():
            np.testing.assert_allclose(host(p.grad), fused_grads[name], rtol=1e-9, atol=1e-12,
                                       err_msg=name)
        with pytest.raises(IndexError, match="layer 2 out of range"):
            lstm.layer_weights(2)
        with pytest.raises(ValueError, match="bidirectional"):
            nn.LSTM(3, 4).layer_weights(0, reverse=True)


# ------------------------------------------------------------------------ the whole-layer node
def _graph_ops(t) -> list:
    """The op name of every node in the graph behind ``t`` (each node once)."""
    seen, todo, names = set(), [t], []
    while todo:
        node = todo.pop()
        if id(node) not in seen:
            seen.add(id(node))
            names.append(node._op)
            todo.extend(node._parents)
    return names


def _float32_run(backend, bidirectional, lengths, with_hx, only):
    """Outputs, final states and every gradient (parameters, input, initial state) of a float32
    2-layer LSTM, with ``only`` (a set of fused-function names) on its reference path."""
    with B.use(backend):
        lstm = nn.LSTM(5, 12, num_layers=2, bidirectional=bidirectional, batch_first=True,
                       generator=grad.Generator(3))
        n_states = 4 if bidirectional else 2
        x = grad.tensor(rand((6, 7, 5), 1).astype(np.float32), requires_grad=True)
        hx = None
        if with_hx:
            hx = tuple(grad.tensor(rand((n_states, 6, 12), s).astype(np.float32), requires_grad=True)
                       for s in (2, 3))
        lens = None if lengths is None else grad.tensor(np.array(lengths))
        with grad.reference_mode(only=only) if only else grad.reference_mode(False):
            out, (h_n, c_n) = lstm(x, hx=hx, lengths=lens)
            loss = (out * grad.tensor(rand(out.shape, 4).astype(np.float32))).sum() \
                + (h_n * grad.tensor(rand(h_n.shape, 5).astype(np.float32))).sum() \
                + (c_n * grad.tensor(rand(c_n.shape, 6).astype(np.float32))).sum()
            ops_seen = _graph_ops(loss)                   # before backward() frees the graph
            loss.backward()
        arrays = [out.numpy(), h_n.numpy(), c_n.numpy(), host(x.grad)]
        arrays += [host(p.grad) for p in lstm.parameters()]
        arrays += [] if hx is None else [host(t.grad) for t in hx]
        return arrays, ops_seen


@backends
@pytest.mark.parametrize("bidirectional,lengths,with_hx", [
    (False, None, False),
    (False, None, True),
    (True, [7, 3, 0, 5, 7, 1], False),
    (True, [7, 3, 0, 5, 7, 1], True),
])
def test_layer_node_gives_the_per_step_path_to_the_bit(backend, bidirectional, lengths, with_hx):
    """``lstm_layer`` (one node per layer and direction) against the loop of ``lstm_step`` nodes
    it replaces (its reference, the previous fast path), in float32: the outputs, ``h_n``,
    ``c_n`` and the gradients of every parameter, of the input and of ``hx`` are bitwise equal
    (the same operations in the same order, ``dW_hh``'s rows included), with and without
    lengths, reverse directions and an initial state."""
    fast, fast_ops = _float32_run(backend, bidirectional, lengths, with_hx, None)
    per_step, step_ops = _float32_run(backend, bidirectional, lengths, with_hx, {"lstm_layer"})
    n_layers = 4 if bidirectional else 2
    assert fast_ops.count("lstm_layer") == n_layers and "lstm_step" not in fast_ops
    assert step_ops.count("lstm_step") == 7 * n_layers and "lstm_layer" not in step_ops
    assert len(fast) == len(per_step)
    for k, (a, b) in enumerate(zip(fast, per_step)):
        assert a.dtype == np.float32 and a.shape == b.shape
        assert np.array_equal(a, b), f"array {k} differs by up to {np.max(np.abs(a - b))}"


@backends
def test_layer_node_stepped_one_time_step_at_a_time_equals_one_call(backend):
    """How the language model generates: ``T = 1`` calls carrying ``(h, c)`` (under ``no_grad``)
    give the same outputs and final state as one call over the whole sequence."""
    with B.use(backend):
        lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True, generator=grad.Generator(0))
        x = grad.tensor(rand((2, 5, 3), 7).astype(np.float32))
        with grad.no_grad():
            whole, (h_n, c_n) = lstm(x)
            state, outs = None, []
            for t in range(5):
                out, state = lstm(x[:, t:t + 1], hx=state)                    # (B, 1, H)
                outs.append(out)
        np.testing.assert_array_equal(grad.cat(outs, dim=1).numpy(), whole.numpy())
        np.testing.assert_array_equal(state[0].numpy(), h_n.numpy())
        np.testing.assert_array_equal(state[1].numpy(), c_n.numpy())
