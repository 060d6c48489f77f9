"""Exercise 9: the backward of an embedding lookup.

docs/concepts.md section 7; docs/derivations.md, embedding. The forward is out = W[ids]: row
ids[b, t] of the table W (V, E). Then run:

    minis2s exercise check 9
"""
import numpy as np


def embedding_backward(ids, g, num_embeddings, padding_idx=None):
    """The gradient of the table W.

    ids: (B, T) ints in [0, num_embeddings); g: (B, T, E) = dL/dout; padding_idx: a row that
    gets no gradient (or None). Returns dW (num_embeddings, E).
    """
    raise NotImplementedError
