"""Exercise 7, solved with the library's own function and its backward
(grad.functional.log_softmax)."""
import numpy as np

import grad
from grad import functional as F


def log_softmax(x):
    return F.log_softmax(grad.tensor(np.asarray(x, dtype=np.float64)), dim=-1).numpy()


def log_softmax_backward(y, g):
    x = grad.tensor(np.asarray(y, dtype=np.float64), requires_grad=True)   # log_softmax(y) = y
    F.log_softmax(x, dim=-1).backward(grad.tensor(np.asarray(g, dtype=np.float64)))
    return x.grad
