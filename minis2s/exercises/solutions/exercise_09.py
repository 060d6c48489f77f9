"""Exercise 9, solved with the library's own embedding and its backward (grad.functional.embedding)."""
import numpy as np

import grad
from grad import functional as F


def embedding_backward(ids, g, num_embeddings, padding_idx=None):
    w = grad.tensor(np.zeros((num_embeddings, g.shape[-1])), requires_grad=True)
    F.embedding(grad.tensor(ids), w, padding_idx=padding_idx).backward(grad.tensor(g))
    return w.grad
