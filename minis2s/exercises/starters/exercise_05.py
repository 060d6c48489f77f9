"""Exercise 5: the backward of sigmoid and tanh.

docs/derivations.md (the LSTM cell uses both). Each backward gets the OUTPUT y of the forward
(what the op keeps for its backward) and the upstream gradient g = dL/dy, and returns dL/dx.
Then run:

    minis2s exercise check 5
"""
import numpy as np


def sigmoid_backward(y, g):
    """y = sigmoid(x) and g = dL/dy, both of any shape (the same). Returns dL/dx (that shape)."""
    raise NotImplementedError


def tanh_backward(y, g):
    """y = tanh(x) and g = dL/dy, both of any shape (the same). Returns dL/dx (that shape)."""
    raise NotImplementedError
