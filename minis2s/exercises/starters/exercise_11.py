"""Exercise 11: the backward of an LSTM cell.

docs/derivations.md, the LSTM cell. The forward is the one of exercise 10:

    z = x W_ih^T + b_ih + h W_hh^T + b_hh      i, f, o = sigmoid(z_i, z_f, z_o)   g = tanh(z_g)
    c' = f * c + i * g                         h' = o * tanh(c')

gh = dL/dh' and gc = dL/dc' both come from the next step (c' is an output too). Then run:

    minis2s exercise check 11
"""
import numpy as np


def lstm_cell_backward(x, h, c, w_ih, w_hh, b_ih, b_hh, gh, gc):
    """x: (B, in); h, c: (B, H); w_ih: (4H, in); w_hh: (4H, H); b_ih, b_hh: (4H,);
    gh, gc: (B, H).

    Returns (dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh), each of the shape of its input.
    """
    raise NotImplementedError
