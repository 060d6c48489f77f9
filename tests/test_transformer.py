"""Transformer layers: ``LayerNorm``, ``scaled_dot_product_attention``, ``MultiheadAttention``,
the encoder and decoder layers and stacks, positional encodings.

Gradient checks of every layer with all its parameters (float64, on every backend), reference
mode against the fast path (1e-10), the conventions (masks, fully masked rows, causality,
padding, dropout), errors, and PyTorch as an oracle (weights copied by name; outputs, attention
weights, input gradients and every parameter gradient to 1e-8). The ops themselves are also in
the property-test catalog (tests/op_catalog.py).
"""
import math

import numpy as np
import pytest

import grad
import grad.functional as F
import grad.nn as nn
from grad import backend as B
from helpers import backends
from test_modes import graph_ops

SMALL = dict(d_model=4, nhead=2, dim_feedforward=6, dropout=0.0)


def host(a):
    return B.to_numpy(a)


def rand(shape, seed, scale=1.0):
    return np.random.default_rng(seed).uniform(-scale, scale, shape)


def leaf(shape, seed, scale=1.0):
    return grad.tensor(rand(shape, seed, scale), requires_grad=True)


def randomise(module, seed):
    """Random values in every parameter (biases and LayerNorm weights start at 0 and 1)."""
    for i, (_, p) in enumerate(module.named_parameters()):
        p.data = B.from_numpy(rand(p.shape, seed + i, 0.8).astype(B.dtype_name(p.dtype)))
    return module


def as_tuple(x):
    return tuple(t for t in x if t is not None) if isinstance(x, tuple) else (x,)


def run_and_grads(fn, inputs, params, seed=7):
    """Outputs, input gradients and parameter gradients of sum(out * v) over all outputs, with a
    fixed random cotangent v, as host arrays."""
    for t in list(inputs) + list(params):
        t.grad = None
    outs = as_tuple(fn(*inputs))
    rng = np.random.default_rng(seed)
    loss = None
    for o in outs:
        term = (o * grad.tensor(rng.normal(size=o.shape))).sum()
        loss = term if loss is None else loss + term
    loss.backward()
    return ([o.numpy() for o in outs], [host(t.grad) for t in inputs],
            [host(p.grad) for p in params])


# ================================================================== gradient checks
def check(fn, inputs, params=(), sampled=False):
    """``grad.gradcheck`` with every coordinate of every input and parameter on NumPy; on the
    slower array_api_strict (there to prove backend discipline, the math being the same), or with
    ``sampled=True``, 12 sampled coordinates per tensor plus, as always, one random direction
    across all of them."""
    coordinates = 12 if sampled or B.name() != "numpy" else 256
    return grad.gradcheck(fn, inputs, params=list(params), max_coordinates=coordinates)


@backends
def test_gradcheck_layer_norm_module(backend):
    with B.use(backend):
        norm = randomise(nn.LayerNorm((2, 3), eps=1e-3, dtype="float64"), 1)
        x = leaf((2, 2, 3), 2)
        assert check(norm, [x], params=norm.parameters())


@backends
def test_gradcheck_multihead_attention(backend):
    with B.use(backend):
        mha = randomise(nn.MultiheadAttention(4, 2, dtype="float64"), 1)
        x, mem = leaf((2, 3, 4), 2), leaf((2, 2, 4), 3)
        padding = np.array([[False, False, True], [False, False, False]])
        # self-attention with key padding and the causal mask: output and averaged weights
        assert check(lambda x: mha(x, x, x, key_padding_mask=padding, is_causal=True),
                              [x], params=mha.parameters())
        # cross-attention, a float mask that itself gets a gradient, weights per head
        bias = leaf((3, 2), 4)
        assert check(lambda x, m, b: mha(x, m, m, attn_mask=b, average_attn_weights=False),
                              [x, mem, bias], params=mha.parameters())
        seq_first = randomise(nn.MultiheadAttention(4, 1, batch_first=False, bias=False,
                                                    dtype="float64"), 5)
        k, v = leaf((2, 2, 4), 6), leaf((2, 2, 4), 7)                   # (S, B, E)
        assert check(lambda q, k, v: seq_first(q, k, v, need_weights=False)[0],
                              [leaf((3, 2, 4), 8), k, v], params=seq_first.parameters())


LAYER_CASES = [("encoder", False, "relu"), ("encoder", True, "gelu"),
               ("decoder", False, "gelu"), ("decoder", True, "relu")]


def make_layer(kind, norm_first, activation, seed=1, **overrides):
    cls = nn.TransformerEncoderLayer if kind == "encoder" else nn.TransformerDecoderLayer
    kw = dict(SMALL, activation=activation, norm_first=norm_first, dtype="float64")
    kw.update(overrides)
    return randomise(cls(**kw), seed)


def layer_call(layer, kind):
    padding = np.array([[False, False, True], [False, False, False]])
    if kind == "encoder":
        return lambda x: layer(x, src_key_padding_mask=padding)
    causal = nn.generate_square_subsequent_mask(3, "float64")
    memory_padding = np.array([[False, True], [False, False]])
    return lambda x, m: layer(x, m, tgt_mask=causal, memory_key_padding_mask=memory_padding)


@backends
@pytest.mark.parametrize("kind, norm_first, activation", LAYER_CASES)
def test_gradcheck_transformer_layers(backend, kind, norm_first, activation):
    with B.use(backend):
        layer = make_layer(kind, norm_first, activation)
        inputs = [leaf((2, 3, 4), 2)] + ([leaf((2, 2, 4), 3)] if kind == "decoder" else [])
        assert check(layer_call(layer, kind), inputs, params=layer.parameters())


@backends
def test_gradcheck_stacks_with_final_norm_and_positional_encodings(backend):
    with B.use(backend):
        gen = grad.Generator(0)
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(**SMALL, norm_first=True,
                                                               dtype="float64", generator=gen),
                                    2, norm=nn.LayerNorm(4, dtype="float64"))
        dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(**SMALL, dtype="float64",
                                                               generator=gen),
                                    2, norm=nn.LayerNorm(4, dtype="float64"))
        randomise(enc, 1), randomise(dec, 50)
        pos = nn.PositionalEncoding(4, learned=True, max_len=5, dtype="float64", generator=gen)
        src, tgt = leaf((1, 2, 4), 2), leaf((1, 3, 4), 3)

        def model(src, tgt):
            memory = enc(nn.PositionalEncoding(4)(src))
            return dec(pos(tgt), memory, tgt_is_causal=True)
        # Every coordinate of each layer is checked above; here every parameter of the stacks
        # (the copies, the final norms) on NumPy, and the stacks' own ones on array_api_strict.
        params = list(enc.parameters()) + list(dec.parameters()) + list(pos.parameters())
        if backend != "numpy":
            params = list(enc.norm.parameters()) + list(dec.norm.parameters()) + [pos.weight]
        assert check(model, [src, tgt], params=params, sampled=True)


# ================================================================== reference mode
@backends
@pytest.mark.parametrize("what", ["mha", "encoder", "decoder", "stacks"])
def test_reference_mode_equals_the_fast_path(backend, what):
    """Outputs (attention weights included), input gradients and every parameter gradient agree
    to 1e-10 in float64, and the reference graph has no fused node."""
    with B.use(backend):
        x, mem = leaf((2, 3, 4), 2), leaf((2, 5, 4), 3)
        padding = np.array([[False, False, False, True, True], [False] * 5])
        if what == "mha":
            module = randomise(nn.MultiheadAttention(4, 2, dtype="float64"), 1)

            def fn(x, mem):
                a = module(x, mem, mem, key_padding_mask=padding, average_attn_weights=False)
                b = module(x, x, x, attn_mask=nn.generate_square_subsequent_mask(3, "float64"))
                return a + b
        elif what in ("encoder", "decoder"):
            module = make_layer(what, what == "decoder", "gelu")
            if what == "encoder":
                def fn(x, mem):
                    return module(mem, src_key_padding_mask=padding) + module(x, is_causal=True)[:, :1]
            else:
                def fn(x, mem):
                    return module(x, mem, tgt_is_causal=True, memory_key_padding_mask=padding)
        else:
            enc = nn.TransformerEncoder(make_layer("encoder", True, "relu"), 2, nn.LayerNorm(4, dtype="float64"))
            dec = nn.TransformerDecoder(make_layer("decoder", False, "gelu"), 2, nn.LayerNorm(4, dtype="float64"))
            module = randomise(nn.ModuleList([enc, dec]), 3)

            def fn(x, mem):
                return dec(x, enc(mem, src_key_padding_mask=padding), tgt_is_causal=True,
                           memory_key_padding_mask=padding)
        params = list(module.parameters())
        fast = run_and_grads(fn, [x, mem], params)
        with grad.reference_mode():
            slow = run_and_grads(fn, [x, mem], params)
            ops_used = graph_ops(as_tuple(fn(x, mem))[0])
        assert not ops_used & {"layer_norm", "scaled_dot_product_attention", "multi_head_attention"}
        fast_ops = graph_ops(as_tuple(fn(x, mem))[0])    # the layers take the packed fused path
        assert fast_ops & {"scaled_dot_product_attention", "multi_head_attention"}, fast_ops
        if what in ("encoder", "decoder", "stacks"):
            assert "multi_head_attention" in fast_ops, fast_ops
        for part_fast, part_slow in zip(fast, slow):
            assert len(part_fast) == len(part_slow)
            for a, b in zip(part_fast, part_slow):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@backends
@pytest.mark.parametrize("case", ["plain", "bool-mask", "float-mask", "causal-dropout-weights"])
def test_fused_ops_equal_their_references(backend, case):
    """layer_norm and scaled_dot_product_attention against their composed twins: outputs and the
    gradients of every input (the float mask included) to 1e-10."""
    with B.use(backend):
        q, k, v = leaf((2, 3, 4, 5), 1, 2.0), leaf((2, 3, 6, 5), 2, 2.0), leaf((2, 3, 6, 7), 3)
        inputs = [q, k, v]
        allowed = rand((3, 1, 6), 4) > 0.0
        allowed[1, 0] = False                                            # one fully masked row
        if case == "float-mask":
            inputs.append(leaf((3, 4, 6), 5, 2.0))
        w1, b1, w2 = leaf((7,), 6), leaf((7,), 7), leaf((4, 7), 8)
        kw = {"bool-mask": dict(attn_mask=allowed),
              "causal-dropout-weights": dict(is_causal=True, dropout_p=0.3,
                                             need_weights=True)}.get(case, {})

        def fn(q, k, v, *mask):
            extra = dict(attn_mask=mask[0]) if mask else {}
            out = as_tuple(F.scaled_dot_product_attention(q, k, v, generator=grad.Generator(5),
                                                          **kw, **extra))  # (2, 3, 4, 7)
            return (F.layer_norm(out[0], 7, w1, b1, eps=1e-3),          # over the last dim
                    F.layer_norm(out[0], (4, 7), w2)) + out[1:]         # over the last two
        fast = run_and_grads(fn, inputs, [w1, b1, w2])
        with grad.reference_mode():
            slow = run_and_grads(fn, inputs, [w1, b1, w2])
        for part_fast, part_slow in zip(fast, slow):
            assert len(part_fast) == len(part_slow)
            for a, b in zip(part_fast, part_slow):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


# ================================================================== conventions
@backends
def test_mask_conventions(backend):
    """scaled_dot_product_attention: bool True = may attend; MultiheadAttention: bool True =
    masked; a float mask of 0 / -inf means the same as the bool one in both."""
    with B.use(backend):
        q, k, v = leaf((2, 2, 3, 4), 1), leaf((2, 2, 5, 4), 2), leaf((2, 2, 5, 3), 3)
        allowed = rand((3, 5), 4) > -0.3
        allowed[:, 0] = True
        additive = np.where(allowed, 0.0, -np.inf)
        by_bool = F.scaled_dot_product_attention(q, k, v, attn_mask=grad.tensor(allowed))
        by_float = F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
        np.testing.assert_allclose(by_bool.numpy(), by_float.numpy(), rtol=1e-12)
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        tril = F.scaled_dot_product_attention(q, k, v, attn_mask=np.tril(np.ones((3, 5), bool)))
        np.testing.assert_allclose(causal.numpy(), tril.numpy(), rtol=1e-12)

        mha = randomise(nn.MultiheadAttention(4, 2, dtype="float64"), 5)
        x, mem = leaf((2, 3, 4), 6), leaf((2, 5, 4), 7)
        results = [mha(x, mem, mem, attn_mask=~allowed), mha(x, mem, mem, attn_mask=additive),
                   mha(x, mem, mem, attn_mask=np.broadcast_to(~allowed, (4, 3, 5)).copy())]
        for out, w in results[1:]:
            np.testing.assert_allclose(out.numpy(), results[0][0].numpy(), rtol=1e-12)
            np.testing.assert_allclose(w.numpy(), results[0][1].numpy(), rtol=1e-12)
        assert np.all(results[0][1].numpy()[:, ~allowed] == 0.0)      # masked keys: weight 0
        # key padding (True = padding) is the same as masking those keys for every query
        pad = np.array([[False, False, False, True, True], [False] * 5])
        out_pad, w_pad = mha(x, mem, mem, key_padding_mask=pad)
        per_head = np.repeat(np.broadcast_to(pad[:, None, :], (2, 3, 5)), 2, axis=0)  # (B*h, T, S)
        out_mask, _ = mha(x, mem, mem, attn_mask=per_head)
        np.testing.assert_allclose(out_pad.numpy(), out_mask.numpy(), rtol=1e-12)
        np.testing.assert_array_equal(w_pad.numpy()[0, :, 3:], 0.0)
        # is_causal without a mask applies the causal mask; a given mask wins over the hint
        out_c, _ = mha(x, x, x, is_causal=True)
        out_m, _ = mha(x, x, x, attn_mask=nn.generate_square_subsequent_mask(3, "float64"))
        np.testing.assert_allclose(out_c.numpy(), out_m.numpy(), rtol=1e-12)


@backends
@pytest.mark.parametrize("reference", [False, True])
def test_fully_masked_rows_give_zero_output_weights_and_gradient(backend, reference):
    with B.use(backend), grad.reference_mode(reference):
        q, k, v = leaf((1, 1, 3, 2), 1), leaf((1, 1, 4, 2), 2), leaf((1, 1, 4, 2), 3)
        allowed = np.ones((3, 4), bool)
        allowed[1] = False                                               # query 1 sees nothing
        out, w = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, need_weights=True)
        np.testing.assert_array_equal(out.numpy()[0, 0, 1], 0.0)
        np.testing.assert_array_equal(w.numpy()[0, 0, 1], 0.0)
        np.testing.assert_allclose(w.numpy()[0, 0, [0, 2]].sum(-1), 1.0)
        (out.sum() + (w * grad.tensor(rand((1, 1, 3, 4), 4))).sum()).backward()
        np.testing.assert_array_equal(host(q.grad)[0, 0, 1], 0.0)
        for t in (q, k, v):
            assert np.all(np.isfinite(host(t.grad)))
        # a float mask of -inf everywhere on a row is the same
        minus_inf = np.where(allowed, 0.0, -np.inf)
        out2 = F.scaled_dot_product_attention(q, k, v, attn_mask=minus_inf)
        np.testing.assert_array_equal(out2.numpy()[0, 0, 1], 0.0)
        # in MultiheadAttention the row's attention is zero: out_proj(0) = out_proj.bias
        mha = randomise(nn.MultiheadAttention(4, 2, dtype="float64"), 5)
        x = leaf((1, 3, 4), 6)
        out, w = mha(x, x, x, attn_mask=~allowed[:, :3])
        np.testing.assert_allclose(out.numpy()[0, 1], host(mha.out_proj.bias.data), rtol=1e-12)
        np.testing.assert_array_equal(w.numpy()[0, 1], 0.0)


@backends
def test_decoder_is_causal_and_ignores_padded_memory(backend):
    with B.use(backend):
        layer = make_layer("decoder", False, "relu")
        tgt, memory = rand((1, 4, 4), 1), rand((1, 3, 4), 2)
        pad = np.array([[False, False, True]])

        def run(t, m):
            return layer(grad.tensor(t), grad.tensor(m), tgt_is_causal=True,
                         memory_key_padding_mask=pad).numpy()
        base = run(tgt, memory)
        later, junk = tgt.copy(), memory.copy()
        later[0, 2:] += 5.0                                              # change positions 2 and 3
        junk[0, 2] = -9.0                                                # change the padded memory
        np.testing.assert_allclose(run(later, memory)[0, :2], base[0, :2], rtol=1e-13, atol=1e-15)
        assert not np.allclose(run(later, memory)[0, 2:], base[0, 2:])
        np.testing.assert_allclose(run(tgt, junk), base, rtol=1e-13, atol=1e-15)


@backends
def test_encoder_padding_does_not_change_a_sequence(backend):
    """A sequence alone equals the same sequence padded in a batch with key padding masked."""
    with B.use(backend):
        enc = nn.TransformerEncoder(make_layer("encoder", True, "relu"), 2, nn.LayerNorm(4, dtype="float64"))
        seq = rand((1, 3, 4), 1)
        batch = rand((2, 5, 4), 2) * 4.0
        batch[0, :3] = seq[0]
        pad = np.array([[False, False, False, True, True], [False] * 5])
        alone = enc(grad.tensor(seq)).numpy()
        padded = enc(grad.tensor(batch), src_key_padding_mask=pad).numpy()
        np.testing.assert_allclose(padded[0, :3], alone[0], rtol=1e-12, atol=1e-13)


@backends
def test_attention_dropout(backend):
    with B.use(backend):
        mha = nn.MultiheadAttention(4, 2, dropout=0.5, generator=grad.Generator(3))
        x = grad.tensor(rand((2, 3, 4), 1).astype(np.float32))
        _, dropped = mha(x, x, x, average_attn_weights=False)
        mha.eval()
        out_a, w_a = mha(x, x, x, average_attn_weights=False)
        out_b, _ = mha(x, x, x)
        np.testing.assert_array_equal(out_a.numpy(), out_b.numpy())
        np.testing.assert_allclose(w_a.numpy().sum(-1), 1.0, rtol=1e-6)
        ratio = np.round(dropped.numpy() / w_a.numpy(), 4)                 # 0 (dropped) or 1 / (1 - p)
        assert set(np.unique(ratio)) == {0.0, 2.0}
        # the same seed draws the same masks on the fused and on the reference path
        q, k, v = leaf((2, 3, 2), 1), leaf((2, 4, 2), 2), leaf((2, 4, 2), 3)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=0.4, generator=grad.Generator(9))
        with grad.reference_mode():
            b = F.scaled_dot_product_attention(q, k, v, dropout_p=0.4, generator=grad.Generator(9))
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
        # the layers of a stack share the generator (a copy would repeat the same masks)
        gen = grad.Generator(0)
        stack = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 6, generator=gen), 2)
        assert all(m.generator is gen for m in stack.modules() if hasattr(m, "generator"))


# ================================================================== structure, init, values
def test_parameter_names_and_stack_copies():
    layer = nn.TransformerDecoderLayer(**SMALL)
    names = [n for n, _ in layer.named_parameters()]
    assert names[:4] == ["self_attn.in_proj_weight", "self_attn.in_proj_bias",
                         "self_attn.out_proj.weight", "self_attn.out_proj.bias"]
    assert names[4:8] == [n.replace("self_attn", "multihead_attn") for n in names[:4]]
    assert names[8:] == ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
                         "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
                         "norm3.weight", "norm3.bias"]
    stack = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(4))
    stack_names = [n for n, _ in stack.named_parameters()]
    assert stack_names == ([f"layers.0.{n}" for n in names] + [f"layers.1.{n}" for n in names]
                           + ["norm.weight", "norm.bias"])
    first, second = stack.layers[0], stack.layers[1]
    for (n, a), (_, b), (_, c) in zip(first.named_parameters(), second.named_parameters(),
                                      layer.named_parameters()):
        assert a is not b and a is not c and a.data is not b.data      # independent copies
        np.testing.assert_array_equal(a.numpy(), b.numpy())             # of the same values
    first.linear1.weight.data = first.linear1.weight.data * 0.0
    assert np.abs(second.linear1.weight.numpy()).max() > 0
    # the copies train: one backward reaches both (fresh Parameter objects, no shared state)
    out = stack(grad.tensor(rand((2, 3, 4), 1).astype(np.float32)),
                grad.tensor(rand((2, 2, 4), 2).astype(np.float32)))
    out.sum().backward()
    assert all(p.grad is not None for p in stack.parameters())


@backends
def test_initialisation_and_dtypes(backend):
    with B.use(backend):
        mha = nn.MultiheadAttention(8, 2, generator=grad.Generator(0))
        w = mha.in_proj_weight.numpy()
        bound = math.sqrt(6.0 / (8 + 24))                               # Xavier-uniform, (24, 8)
        assert w.shape == (24, 8) and np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
        assert not mha.in_proj_bias.numpy().any() and not mha.out_proj.bias.numpy().any()
        assert np.abs(mha.out_proj.weight.numpy()).max() <= 1 / math.sqrt(8)
        norm = nn.LayerNorm(8)
        np.testing.assert_array_equal(norm.weight.numpy(), 1.0)
        np.testing.assert_array_equal(norm.bias.numpy(), 0.0)
        assert nn.LayerNorm(8, elementwise_affine=False).weight is None
        assert nn.LayerNorm(8, bias=False).bias is None
        assert nn.MultiheadAttention(8, 2, bias=False).in_proj_bias is None
        layer = nn.TransformerEncoderLayer(8, 2, 16, generator=grad.Generator(0))
        x = grad.tensor(rand((2, 3, 8), 1).astype(np.float32))
        out = layer(x)
        assert out.shape == (2, 3, 8) and B.dtype_name(out.dtype) == "float32"
        _, weights = mha(x, x, x)
        assert weights.shape == (2, 3, 3) and B.dtype_name(weights.dtype) == "float32"
        assert B.dtype_name(nn.PositionalEncoding(8)(x).dtype) == "float32"
        assert "MultiheadAttention(embed_dim=8, num_heads=2" in repr(layer)


@backends
def test_positional_encoding_values(backend):
    with B.use(backend):
        pe = nn.sinusoidal_encoding(6, 5, "float64").numpy()
        pos, i = np.arange(6)[:, None], np.arange(5)[None, :]
        angle = pos / 10000.0 ** ((i - i % 2) / 5)
        np.testing.assert_allclose(pe, np.where(i % 2 == 0, np.sin(angle), np.cos(angle)),
                                   rtol=1e-12, atol=1e-15)
        x = rand((2, 6, 5), 1)
        enc = nn.PositionalEncoding(5)
        np.testing.assert_allclose(enc(grad.tensor(x)).numpy(), x + pe, rtol=1e-12)
        seq_first = nn.PositionalEncoding(5, batch_first=False)
        np.testing.assert_allclose(seq_first(grad.tensor(x.transpose(1, 0, 2).copy())).numpy(),
                                   (x + pe).transpose(1, 0, 2), rtol=1e-12)
        learned = nn.PositionalEncoding(5, max_len=6, learned=True, dtype="float64")
        assert learned.weight.shape == (6, 5) and 0.005 < learned.weight.numpy().std() < 0.05
        np.testing.assert_allclose(learned(grad.tensor(x[:, :4])).numpy(),
                                   x[:, :4] + learned.weight.numpy()[:4], rtol=1e-12)
        with pytest.raises(ValueError, match="longer than max_len=6"):
            learned(grad.tensor(rand((1, 7, 5), 2)))
        assert not list(enc.parameters())


def test_gelu_values():
    z = np.linspace(-7.0, 7.0, 281)
    gelu = z * 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2.0)) for v in z]))
    for backend in ("numpy", "array_api_strict"):
        with B.use(backend):
            np.testing.assert_allclose(F.gelu(grad.tensor(z)).numpy(), gelu, rtol=0, atol=5e-14)


# ================================================================== errors
@backends
def test_argument_errors(backend):
    with B.use(backend):
        x = grad.tensor(rand((2, 3, 4), 1))
        with pytest.raises(ValueError, match="normalized_shape"):
            F.layer_norm(x, (3,))
        with pytest.raises(ValueError, match="weight must have shape"):
            F.layer_norm(x, 4, grad.tensor(np.ones(3)))
        q = grad.tensor(rand((2, 3, 4), 2))
        with pytest.raises(ValueError, match="not both"):
            F.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((3, 3), bool), is_causal=True)
        with pytest.raises(ValueError, match="does not broadcast"):
            F.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((4, 3), bool))
        with pytest.raises(ValueError, match="same leading dims"):
            F.scaled_dot_product_attention(q, grad.tensor(rand((1, 3, 4), 3)), q)
        with pytest.raises(TypeError, match="bool"):
            F.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((3, 3), np.int64))
        with pytest.raises(ValueError, match="multiple of num_heads"):
            nn.MultiheadAttention(6, 4)
        mha = nn.MultiheadAttention(4, 2, dtype="float64")
        with pytest.raises(ValueError, match="embed_dim=4"):
            mha(grad.tensor(rand((2, 3, 5), 4)), x, x)
        with pytest.raises(ValueError, match=r"key_padding_mask must be \(2, 3\)"):
            mha(x, x, x, key_padding_mask=np.zeros((3, 2), bool))
        with pytest.raises(ValueError, match=r"attn_mask must be \(3, 3\) or \(4, 3, 3\)"):
            mha(x, x, x, attn_mask=np.zeros((2, 3, 3), bool))
        with pytest.raises(ValueError, match="3-D"):
            mha(grad.tensor(rand((3, 4), 5)), x, x)
        with pytest.raises(ValueError, match="activation"):
            nn.TransformerEncoderLayer(4, 2, activation="tanh")
        with pytest.raises(ValueError, match="num_layers"):
            nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2), 0)
        with pytest.raises(ValueError, match="approximate"):
            F.gelu(x, approximate="fast")


# ================================================================== PyTorch oracle
TOL = dict(rtol=1e-8, atol=1e-10)


def torch_or_skip():
    return pytest.importorskip("torch")


def copy_from_torch(tmod, gmod):
    state = {name: p.detach().numpy() for name, p in tmod.named_parameters()}
    assert list(state) == [n for n, _ in gmod.named_parameters()]
    gmod.load_state_dict(state)


def compare_with_torch(torch, tmod, gmod, t_fn, g_fn, inputs):
    """Run both on the same float64 inputs with the same random cotangent on every output
    (attention weights included); compare outputs, input gradients and parameter gradients."""
    t_in = [torch.tensor(a, requires_grad=True) for a in inputs]
    g_in = [grad.tensor(a, requires_grad=True) for a in inputs]
    t_out, g_out = as_tuple(t_fn(*t_in)), as_tuple(g_fn(*g_in))
    assert len(t_out) == len(g_out)
    rng = np.random.default_rng(11)
    cotangents = [rng.normal(size=tuple(o.shape)) for o in t_out]
    sum((o * torch.tensor(c)).sum() for o, c in zip(t_out, cotangents)).backward()
    total = None
    for o, c in zip(g_out, cotangents):
        term = (o * grad.tensor(c)).sum()
        total = term if total is None else total + term
    total.backward()
    for a, b in zip(g_out, t_out):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), **TOL)
    for a, b in zip(g_in, t_in):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), **TOL)
    if tmod is not None:
        for (name, p), (tname, tp) in zip(gmod.named_parameters(), tmod.named_parameters()):
            assert name == tname
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), err_msg=name, **TOL)


@pytest.mark.parametrize("shape, eps, affine", [((5,), 1e-5, True), ((3, 5), 1e-3, True),
                                                ((5,), 1e-5, False)])
def test_layer_norm_matches_torch(shape, eps, affine):
    torch = torch_or_skip()
    torch.manual_seed(0)
    tmod = torch.nn.LayerNorm(shape, eps=eps, elementwise_affine=affine).double()
    if affine:
        with torch.no_grad():
            for p in tmod.parameters():
                p.copy_(torch.tensor(rand(tuple(p.shape), 3)))
    gmod = nn.LayerNorm(shape, eps=eps, elementwise_affine=affine, dtype="float64")
    copy_from_torch(tmod, gmod)
    compare_with_torch(torch, tmod, gmod, tmod, gmod, [rand((2, 3) + shape, 1)])
    compare_with_torch(torch, None, None, lambda x: torch.nn.functional.layer_norm(x, shape, eps=eps),
                       lambda x: F.layer_norm(x, shape, eps=eps), [rand((4,) + shape, 2)])


@pytest.mark.parametrize("mask", ["none", "bool", "float", "causal"])
def test_scaled_dot_product_attention_matches_torch(mask):
    torch = torch_or_skip()
    tf = torch.nn.functional
    q, k, v = rand((2, 3, 4, 5), 1), rand((2, 3, 6, 5), 2), rand((2, 3, 6, 7), 3)
    inputs = [q, k, v]
    allowed = rand((2, 1, 4, 6), 4) > -0.4
    allowed[..., 0] = True                             # no fully masked row (PyTorch: NaN there)
    if mask == "float":
        inputs.append(rand((4, 6), 5, 2.0))            # a float mask gets a gradient too
    kw = {"is_causal": mask == "causal", "scale": 0.3 if mask == "bool" else None}

    def t_fn(q, k, v, *m):
        attn = m[0] if m else torch.tensor(allowed) if mask == "bool" else None
        return tf.scaled_dot_product_attention(q, k, v, attn_mask=attn, **kw)

    def g_fn(q, k, v, *m):
        attn = m[0] if m else grad.tensor(allowed) if mask == "bool" else None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn, **kw)
    compare_with_torch(torch, None, None, t_fn, g_fn, inputs)


MHA_CASES = {
    "self-1-head": dict(heads=1),
    "self-4-heads-key-padding-per-head-weights": dict(heads=4, padding="bool", average=False),
    "self-4-heads-causal-bool": dict(heads=4, attn="causal"),
    "cross-4-heads-float-masks": dict(heads=4, cross=True, attn="float", padding="float"),
    "cross-1-head-3d-bool-mask": dict(heads=1, cross=True, attn="bool3d", padding="bool"),
    "cross-4-heads-no-weights-seq-first": dict(heads=4, cross=True, need_weights=False,
                                               batch_first=False, padding="bool"),
    "cross-distinct-key-value-no-bias": dict(heads=2, cross=True, distinct=True, bias=False,
                                             attn="float"),
}


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_multihead_attention_matches_torch(case):
    torch = torch_or_skip()
    c = MHA_CASES[case]
    heads, cross = c["heads"], c.get("cross", False)
    batch_first, n_batch, n_q, e = c.get("batch_first", True), 2, 3, 8
    n_k = 5 if cross else n_q
    torch.manual_seed(0)
    tmod = torch.nn.MultiheadAttention(e, heads, bias=c.get("bias", True),
                                       batch_first=batch_first).double()
    if c.get("bias", True):
        with torch.no_grad():
            tmod.in_proj_bias.copy_(torch.tensor(rand(3 * e, 9)))      # not all zero
            tmod.out_proj.bias.copy_(torch.tensor(rand(e, 10)))
    gmod = nn.MultiheadAttention(e, heads, bias=c.get("bias", True), batch_first=batch_first,
                                 dtype="float64")
    copy_from_torch(tmod, gmod)

    def layout(shape):
        return shape if batch_first else (shape[1], shape[0], shape[2])
    inputs = [rand(layout((n_batch, n_q, e)), 1)]
    if cross:
        inputs.append(rand(layout((n_batch, n_k, e)), 2))
        if c.get("distinct"):
            inputs.append(rand(layout((n_batch, n_k, e)), 3))
    masks = {}
    if c.get("padding") == "bool":
        masks["key_padding_mask"] = np.array([[False] * (n_k - 2) + [True] * 2, [False] * n_k])
    elif c.get("padding") == "float":
        masks["key_padding_mask"] = rand((n_batch, n_k), 4, 2.0)
    if c.get("attn") == "causal":
        masks["attn_mask"] = np.triu(np.ones((n_q, n_k), bool), k=1)   # True above the diagonal
    elif c.get("attn") == "float":
        masks["attn_mask"] = rand((n_q, n_k), 5, 2.0)
    elif c.get("attn") == "bool3d":
        m = rand((n_batch * heads, n_q, n_k), 6) > 0.3
        m[..., 0] = False                              # every query keeps a key
        masks["attn_mask"] = m
    kw = dict(need_weights=c.get("need_weights", True), average_attn_weights=c.get("average", True))

    def call(module, wrap, xs):
        q = xs[0]
        k = xs[1] if len(xs) > 1 else q
        v = xs[2] if len(xs) > 2 else k
        return module(q, k, v, **{n: wrap(m) for n, m in masks.items()}, **kw)
    compare_with_torch(torch, tmod, gmod, lambda *xs: call(tmod, torch.tensor, xs),
                       lambda *xs: call(gmod, grad.tensor, xs), inputs)


def _torch_layer(torch, kind, norm_first, activation):
    cls = torch.nn.TransformerEncoderLayer if kind == "encoder" else torch.nn.TransformerDecoderLayer
    torch.manual_seed(0)
    tmod = cls(8, 2, 12, 0.0, activation, batch_first=True, norm_first=norm_first).double()
    with torch.no_grad():                              # LayerNorm weights and biases: not 1 and 0
        for i, (name, p) in enumerate(tmod.named_parameters()):
            noise = torch.tensor(rand(tuple(p.shape), i, 0.5))
            if name.startswith("norm") and name.endswith("weight"):
                p.copy_(1.0 + noise)
            elif name.endswith("bias"):
                p.copy_(noise)
    return tmod


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning")
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_layers_match_torch(kind, norm_first, activation):
    torch = torch_or_skip()
    tmod = _torch_layer(torch, kind, norm_first, activation)
    cls = nn.TransformerEncoderLayer if kind == "encoder" else nn.TransformerDecoderLayer
    gmod = cls(8, 2, 12, 0.0, activation, norm_first=norm_first, dtype="float64")
    copy_from_torch(tmod, gmod)
    pad_t = np.array([[False, False, False, True], [False] * 4])
    pad_s = np.array([[False, False, True], [False] * 3])
    causal = np.triu(np.ones((4, 4), bool), k=1)
    if kind == "encoder":
        def call(module, wrap, x):
            return module(x, src_mask=wrap(causal), src_key_padding_mask=wrap(pad_t))
        inputs = [rand((2, 4, 8), 1)]
    else:
        def call(module, wrap, x, m):
            mask = nn.generate_square_subsequent_mask(4, "float64") if wrap is grad.tensor \
                else torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
            return module(x, m, tgt_mask=mask, tgt_key_padding_mask=wrap(pad_t),
                          memory_key_padding_mask=wrap(pad_s))
        inputs = [rand((2, 4, 8), 1), rand((2, 3, 8), 2)]
    compare_with_torch(torch, tmod, gmod, lambda *xs: call(tmod, torch.tensor, *xs),
                       lambda *xs: call(gmod, grad.tensor, *xs), inputs)


def test_stacks_with_final_norm_match_torch():
    torch = torch_or_skip()
    torch.manual_seed(0)
    t_enc = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(8, 2, 12, 0.0, batch_first=True, norm_first=True), 2,
        norm=torch.nn.LayerNorm(8), enable_nested_tensor=False)
    t_dec = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(8, 2, 12, 0.0, "gelu", batch_first=True), 2,
        norm=torch.nn.LayerNorm(8))
    tmod = torch.nn.ModuleList([t_enc, t_dec]).double()
    g_enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 12, 0.0, norm_first=True,
                                                             dtype="float64"),
                                  2, norm=nn.LayerNorm(8, dtype="float64"))
    g_dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 12, 0.0, "gelu", dtype="float64"),
                                  2, norm=nn.LayerNorm(8, dtype="float64"))
    gmod = nn.ModuleList([g_enc, g_dec])
    copy_from_torch(tmod, gmod)
    pad = np.array([[False, False, True], [False] * 3])

    def call(enc, dec, wrap, src, tgt, mask):
        memory = enc(src, src_key_padding_mask=wrap(pad))
        return dec(tgt, memory, tgt_mask=mask, memory_key_padding_mask=wrap(pad))
    t_mask = torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    g_mask = nn.generate_square_subsequent_mask(4, "float64")
    compare_with_torch(torch, tmod, gmod,
                       lambda s, t: call(t_enc, t_dec, torch.tensor, s, t, t_mask),
                       lambda s, t: call(g_enc, g_dec, grad.tensor, s, t, g_mask),
                       [rand((2, 3, 8), 1), rand((2, 4, 8), 2)])
    np.testing.assert_allclose(nn.generate_square_subsequent_mask(4, "float64").numpy(),
                               t_mask.numpy())


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate):
    torch = torch_or_skip()
    x = np.linspace(-9.0, 9.0, 721)
    compare_with_torch(torch, None, None,
                       lambda x: torch.nn.functional.gelu(x, approximate=approximate),
                       lambda x: F.gelu(x, approximate=approximate), [x])
