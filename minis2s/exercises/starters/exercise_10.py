"""Exercise 10: one step of an LSTM cell.

docs/concepts.md sections 7 and 8; grad/functional.py lstm_cell_reference is the library's
version. PyTorch's layout: the gate blocks of W_ih (4H, in), W_hh (4H, H) and the biases (4H,)
are in the order i, f, g, o:

    z = x W_ih^T + b_ih + h W_hh^T + b_hh            (B, 4H)
    i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_g)   o = sigmoid(z_o)
    c' = f * c + i * g
    h' = o * tanh(c')

Then run:

    minis2s exercise check 10
"""
import numpy as np


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """x: (B, in); h, c: (B, H); w_ih: (4H, in); w_hh: (4H, H); b_ih, b_hh: (4H,).

    Returns (h_new, c_new), each (B, H).
    """
    raise NotImplementedError
