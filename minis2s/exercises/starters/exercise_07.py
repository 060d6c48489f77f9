"""Exercise 7: log-softmax and its backward.

docs/concepts.md section 5 (cross-entropy is log-softmax then NLL); docs/derivations.md,
log-softmax. Then run:

    minis2s exercise check 7
"""
import numpy as np


def log_softmax(x):
    """log(softmax(x)) over the last axis, computed without overflow.

    x: (..., C) logits, possibly as large as 1000. Returns (..., C).
    """
    raise NotImplementedError


def log_softmax_backward(y, g):
    """y = log_softmax(x) (..., C) and g = dL/dy (..., C). Returns dL/dx (..., C)."""
    raise NotImplementedError
