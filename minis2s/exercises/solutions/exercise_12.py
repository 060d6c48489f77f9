"""Exercise 12, solved with the library's own lookup (grad.functional.attention_lookup)."""
import numpy as np

import grad
from grad import functional as F


def attention(query, memory, pad_mask):
    context, weights = F.attention_lookup(grad.tensor(np.asarray(query, dtype=np.float64)),
                                          grad.tensor(np.asarray(memory, dtype=np.float64)), pad_mask)
    return context.numpy(), weights.numpy()
