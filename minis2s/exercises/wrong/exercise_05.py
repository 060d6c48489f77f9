"""Exercise 5, wrong: tanh's derivative applied to the output, tanh taken twice."""
import numpy as np


def sigmoid_backward(y, g):
    return g * y * (1.0 - y)


def tanh_backward(y, g):
    return g * (1.0 - np.tanh(y) ** 2)                                         # wrong: y is tanh(x)
