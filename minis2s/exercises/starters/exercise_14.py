"""Exercise 14: one decoder step with input feeding.

docs/concepts.md section 15 (input feeding), 13 (attention); minis2s/models/decoder.py. One
layer, Luong "general" attention:

    x_t  = [emb(y_{t-1}); h~_{t-1}]          (B, E + H)   input feeding: h~ goes into the INPUT
    h, c = LSTM(x_t, (h, c))                 (B, H)
    q    = W_a h                              (B, H)
    context, a = attention(q, memory, mask)
    h~_t = tanh(W_c [h; context])             (B, H)
    log_probs = log_softmax(W_out h~_t + b_out)   (B, V)

The helpers below (the LSTM cell and the attention lookup, from the library) are given: this
exercise is about wiring them. Then run:

    minis2s exercise check 14
"""
import numpy as np

import grad
from grad import functional as F


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """(h_new, c_new) of one LSTM step (exercise 10), as NumPy arrays."""
    t = [grad.tensor(np.asarray(a, dtype=np.float64)) for a in (x, h, c, w_ih, w_hh, b_ih, b_hh)]
    h_new, c_new = F.lstm_cell_reference(*t)
    return h_new.numpy(), c_new.numpy()


def attention(query, memory, pad_mask):
    """(context (B, H), weights (B, S)) of dot-product attention (exercise 12)."""
    context, weights = F.attention_lookup(grad.tensor(np.asarray(query, dtype=np.float64)),
                                          grad.tensor(np.asarray(memory, dtype=np.float64)), pad_mask)
    return context.numpy(), weights.numpy()


def decoder_step(y_prev, h_tilde_prev, h, c, memory, pad_mask, params):
    """y_prev: (B,) ids of the previous tokens; h_tilde_prev: (B, H); h, c: (B, H);
    memory: (B, S, H); pad_mask: (B, S) bool.
    params: NumPy arrays in PyTorch's layouts: embedding (V, E), w_ih (4H, E + H), w_hh (4H, H),
    b_ih (4H,), b_hh (4H,), w_a (H, H), w_c (H, 2H), w_out (V, H), b_out (V,).

    Returns (log_probs (B, V), h_tilde (B, H), h (B, H), c (B, H)).
    """
    raise NotImplementedError
