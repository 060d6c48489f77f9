"""grad: a small reverse-mode autograd engine on a switchable array backend.

    import grad
    x = grad.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    x.grad            # array([2., 4.], dtype=float32)

Modules: ``grad.backend`` (NumPy / CuPy / array_api_strict), ``grad.tensor`` (Tensor, backward),
``grad.accumulate`` (how the gradients sent to one tensor are summed),
``grad.ops`` (primitive ops), ``grad.functional`` (softmax, losses, embedding, dropout, LSTM
cells, layer norm, attention), ``grad.nn`` (layers), ``grad.optim`` (SGD, Adam), ``grad.gradcheck``,
``grad.modes`` (``grad.reference_mode()``: run the composed twins of the fused functions, or
with ``only={...}`` of the named ones; ``@fused(reference=...)`` declares a pair,
``grad.modes.fused_functions()`` lists them),
``grad.viz`` (the graph behind a tensor as DOT, Mermaid or a rendered picture).
"""
from . import backend
from .backend import Generator, manual_seed
from .tensor import Tensor, enable_grad, is_grad_enabled, no_grad
from .modes import is_reference_mode, reference_mode
from .ops import (add, amax, argmax, bmm, cat, concat, div, erf, exp, expand, gather, index_select,
                  log, masked_fill, matmul, max, mean, mul, permute, relu, reshape, sigmoid, split,
                  sqrt, squeeze, stack, sub, sum, tanh, topk, transpose, unsqueeze, view, where)
from .factories import arange, full, ones, rand, randn, tensor, zeros, zeros_like, ones_like
from . import functional
from . import nn
from . import optim
from . import viz
from .gradcheck import GradcheckError, gradcheck

__version__ = "0.1.0"


def __getattr__(name):
    """``grad.float32``, ``grad.float64``, ``grad.int64``, ``grad.bool``: the active backend's dtypes."""
    if name in ("float32", "float64", "int64", "int32", "bool"):
        return backend.get_dtype(name)
    raise AttributeError(f"module 'grad' has no attribute {name!r}")
