"""Exercise 15: teacher forcing with a ratio.

docs/concepts.md section 12. In training the decoder's input at step t is the reference token
y_{t-1} (teacher forcing). With a teacher-forcing ratio tf_ratio < 1, at each step t >= 1 each
sequence instead feeds its OWN previous prediction (the argmax of its previous scores, never PAD
or BOS) with probability 1 - tf_ratio. The random draw is given: u ~ uniform[0, 1), one per
sequence, and "with probability 1 - tf_ratio" means u < 1 - tf_ratio. Then run:

    minis2s exercise check 15
"""
import numpy as np

PAD, BOS = 0, 1


def choose_inputs(reference, prev_logits, tf_ratio, u):
    """reference: (B,) ids, the reference tokens y_{t-1}; prev_logits: (B, V) the decoder's
    scores at step t - 1; tf_ratio: a float in [0, 1]; u: (B,) uniform draws in [0, 1).

    Returns (B,) integer ids: the decoder's inputs at step t.
    """
    raise NotImplementedError
