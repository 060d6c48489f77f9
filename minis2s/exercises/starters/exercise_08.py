"""Exercise 8: softmax cross-entropy with ignore_index.

docs/concepts.md sections 5 and 6. The loss of row n is -log softmax(logits[n])[target[n]];
rows whose target equals ignore_index (PAD in a seq2seq batch) are not predicted tokens: they
add nothing and are not counted in the mean. Then run:

    minis2s exercise check 8
"""
import numpy as np


def cross_entropy(logits, target, ignore_index=-100):
    """Mean cross-entropy over the rows whose target is not ignore_index.

    logits: (N, C) floats; target: (N,) ints. Returns a float.
    """
    raise NotImplementedError


def cross_entropy_backward(logits, target, ignore_index=-100):
    """The gradient of `cross_entropy(logits, target, ignore_index)` with respect to the logits.

    Returns (N, C).
    """
    raise NotImplementedError
