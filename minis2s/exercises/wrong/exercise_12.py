"""Exercise 12, wrong: the mask applied AFTER the softmax (PAD weights zeroed, the others not
renormalised)."""
import numpy as np


def attention(query, memory, pad_mask):
    scores = np.einsum("bsh,bh->bs", memory, query)                            # (B, S)
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights = z / z.sum(axis=1, keepdims=True)
    if pad_mask is not None:
        weights = np.where(pad_mask, 0.0, weights)                             # wrong: too late
    context = np.einsum("bs,bsh->bh", weights, memory)
    return context, weights
