"""Exercise 13, wrong: d_memory only through the scores (the keys); the values' share
a (x) g_context is forgotten."""
import numpy as np


def attention_backward(query, memory, pad_mask, g_context):
    scores = np.einsum("bsh,bh->bs", memory, query)
    if pad_mask is not None:
        scores = np.where(pad_mask, -np.inf, scores)
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    a = z / z.sum(axis=1, keepdims=True)                                       # (B, S)
    ga = np.einsum("bsh,bh->bs", memory, g_context)
    gs = a * (ga - (a * ga).sum(axis=1, keepdims=True))
    d_query = np.einsum("bs,bsh->bh", gs, memory)
    d_memory = gs[:, :, None] * query[:, None, :]                              # wrong: + a (x) gc
    return d_query, d_memory
