"""``grad.reference_mode()``: the switch itself (nesting, restoring, decorator, exceptions) and
that the fused functions really take their composed twins under it (the graph has no fused node)."""
import numpy as np
import pytest

import grad
import grad.functional as F
from grad import backend as B
from helpers import backends


def graph_ops(t) -> set:
    """The op names of every node in the graph behind ``t``."""
    seen, todo, names = set(), [t], set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        names.add(node._op)
        todo.extend(node._parents)
    return names


def test_switch_nests_restores_and_decorates():
    assert grad.is_reference_mode() is False
    outer = grad.reference_mode()
    with outer:
        assert grad.is_reference_mode()
        with grad.reference_mode(False):
            assert not grad.is_reference_mode()
            with outer:                                   # the same object entered again
                assert grad.is_reference_mode()
            assert not grad.is_reference_mode()
        assert grad.is_reference_mode()
    assert grad.is_reference_mode() is False
    with pytest.raises(KeyError):
        with grad.reference_mode():
            raise KeyError("an error inside the block")
    assert grad.is_reference_mode() is False              # restored on the way out

    @grad.reference_mode()
    def inside():
        """doc"""
        return grad.is_reference_mode()
    assert inside() is True and grad.is_reference_mode() is False
    assert inside.__name__ == "inside" and inside.__doc__ == "doc"
    assert grad.modes.is_reference_mode is grad.is_reference_mode


@backends
def test_fused_functions_dispatch_to_their_twins(backend):
    with B.use(backend):
        rng = np.random.default_rng(0)
        x = grad.tensor(rng.normal(size=(2, 3, 4)), requires_grad=True)
        w = grad.tensor(rng.normal(size=(4,)), requires_grad=True)
        fast = [F.layer_norm(x, 4, w), F.scaled_dot_product_attention(x, x, x, is_causal=True)]
        with grad.reference_mode():
            slow = [F.layer_norm(x, 4, w), F.scaled_dot_product_attention(x, x, x, is_causal=True)]
        assert fast[0]._op == "layer_norm" and fast[1]._op == "scaled_dot_product_attention"
        for t in slow:
            assert not graph_ops(t) & {"layer_norm", "scaled_dot_product_attention"}, graph_ops(t)
        for a, b in zip(fast, slow):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
