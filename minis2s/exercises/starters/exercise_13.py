"""Exercise 13: the backward of dot-product attention.

docs/derivations.md, attention. The forward (exercise 12), per sentence:

    scores = memory q      (S,)       a = softmax(scores), 0 at PAD      context = a^T memory  (H,)

memory is used twice: as the keys (in the scores) and as the values (in the context). Then run:

    minis2s exercise check 13
"""
import numpy as np


def attention_backward(query, memory, pad_mask, g_context):
    """query: (B, H); memory: (B, S, H); pad_mask: (B, S) bool or None; g_context: (B, H) =
    dL/dcontext.

    Returns (d_query (B, H), d_memory (B, S, H)).
    """
    raise NotImplementedError
