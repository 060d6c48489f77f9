"""Exercise 14, wrong: the LSTM input built as [h~_prev; emb] instead of [emb; h~_prev] (the
shapes fit, the weights' columns do not)."""
import numpy as np

import grad
from grad import functional as F


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    t = [grad.tensor(np.asarray(a, dtype=np.float64)) for a in (x, h, c, w_ih, w_hh, b_ih, b_hh)]
    h_new, c_new = F.lstm_cell_reference(*t)
    return h_new.numpy(), c_new.numpy()


def attention(query, memory, pad_mask):
    context, weights = F.attention_lookup(grad.tensor(np.asarray(query, dtype=np.float64)),
                                          grad.tensor(np.asarray(memory, dtype=np.float64)), pad_mask)
    return context.numpy(), weights.numpy()


def decoder_step(y_prev, h_tilde_prev, h, c, memory, pad_mask, params):
    emb = params["embedding"][y_prev]                                          # (B, E)
    x = np.concatenate([h_tilde_prev, emb], axis=1)                            # wrong order
    h, c = lstm_cell(x, h, c, params["w_ih"], params["w_hh"], params["b_ih"], params["b_hh"])
    context, _ = attention(h @ params["w_a"].T, memory, pad_mask)
    h_tilde = np.tanh(np.concatenate([h, context], axis=1) @ params["w_c"].T)
    logits = h_tilde @ params["w_out"].T + params["b_out"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return log_probs, h_tilde, h, c
