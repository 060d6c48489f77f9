"""Exercise 6: softmax and its backward.

docs/concepts.md section 13 (attention weights are a softmax); docs/derivations.md, softmax.
Then run:

    minis2s exercise check 6
"""
import numpy as np


def softmax(x):
    """softmax over the last axis: exp(x) / sum(exp(x)).

    x: (..., C) logits, possibly as large as 1000 (exp(1000) overflows). Returns (..., C).
    """
    raise NotImplementedError


def softmax_backward(y, g):
    """y = softmax(x) (..., C) and g = dL/dy (..., C). Returns dL/dx (..., C)."""
    raise NotImplementedError
