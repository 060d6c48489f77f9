"""Exercise 8, solved with the library's own loss and its backward (grad.functional.cross_entropy)."""
import numpy as np

import grad
from grad import functional as F


def cross_entropy(logits, target, ignore_index=-100):
    return F.cross_entropy(grad.tensor(np.asarray(logits, dtype=np.float64)), grad.tensor(target),
                           ignore_index=ignore_index).item()


def cross_entropy_backward(logits, target, ignore_index=-100):
    x = grad.tensor(np.asarray(logits, dtype=np.float64), requires_grad=True)
    F.cross_entropy(x, grad.tensor(target), ignore_index=ignore_index).backward()
    return x.grad
