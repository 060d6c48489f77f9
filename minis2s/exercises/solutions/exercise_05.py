"""Exercise 5, solved with the library's autograd (grad.ops.sigmoid, grad.ops.tanh)."""
import numpy as np

import grad


def _backward(op, x, g):
    x = grad.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    op(x).backward(grad.tensor(np.asarray(g, dtype=np.float64)))
    return x.grad


def sigmoid_backward(y, g):
    return _backward(grad.sigmoid, np.log(y / (1.0 - y)), g)      # x = logit(y)


def tanh_backward(y, g):
    return _backward(grad.tanh, np.arctanh(y), g)
