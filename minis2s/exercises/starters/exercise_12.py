"""Exercise 12: Luong (dot) attention with a padding mask.

docs/concepts.md sections 13 and 14. The query is compared with every key (the encoder outputs),
the scores become weights by a softmax, and the context is the weighted sum of the values (the
same encoder outputs). PAD positions must get exactly zero weight. Then run:

    minis2s exercise check 12
"""
import numpy as np


def attention(query, memory, pad_mask):
    """query: (B, H); memory: (B, S, H) (keys = values); pad_mask: (B, S) bool, True at PAD, or
    None (no padding).

    Returns (context (B, H), weights (B, S)).
    """
    raise NotImplementedError
