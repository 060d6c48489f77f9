"""Exercise 11, wrong: dc' takes only the path through h', not the incoming gc."""
import numpy as np


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm_cell_backward(x, h, c, w_ih, w_hh, b_ih, b_hh, gh, gc):
    z = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    zi, zf, zg, zo = np.split(z, 4, axis=1)
    i, f, g, o = _sigmoid(zi), _sigmoid(zf), np.tanh(zg), _sigmoid(zo)
    c_new = f * c + i * g
    tc = np.tanh(c_new)
    dc_new = gh * o * (1.0 - tc ** 2)                                          # wrong: + gc missing
    dz = np.concatenate([dc_new * g * i * (1 - i), dc_new * c * f * (1 - f),
                         dc_new * i * (1 - g ** 2), gh * tc * o * (1 - o)], axis=1)
    return (dz @ w_ih, dz @ w_hh, dc_new * f, dz.T @ x, dz.T @ h, dz.sum(axis=0), dz.sum(axis=0))
