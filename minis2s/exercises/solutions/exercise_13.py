"""Exercise 13, solved with the library's fused lookup and its hand-written backward
(grad.functional.attention_lookup)."""
import numpy as np

import grad
from grad import functional as F


def attention_backward(query, memory, pad_mask, g_context):
    q = grad.tensor(np.asarray(query, dtype=np.float64), requires_grad=True)
    m = grad.tensor(np.asarray(memory, dtype=np.float64), requires_grad=True)
    context, _ = F.attention_lookup(q, m, pad_mask)
    context.backward(grad.tensor(np.asarray(g_context, dtype=np.float64)))
    return q.grad, m.grad
