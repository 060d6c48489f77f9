"""Exercise 17: greedy decoding.

docs/concepts.md section 16; minis2s.search.greedy is the library's version. The decoder is
given as a function `step(y_prev) -> log_probs` that runs one decoder step for the whole batch
on the previous tokens and keeps its own state between calls. Then run:

    minis2s exercise check 17
"""
import numpy as np

PAD, BOS, EOS = 0, 1, 2


def greedy_decode(step, batch_size, max_len):
    """step(y_prev (B,) int ids) -> log_probs (B, V); call it first with BOS for every sentence.

    At each step choose the most probable token, never PAD or BOS. A sentence that has produced
    EOS is done: from then on its tokens are PAD (its EOS is kept). Stop when every sentence is
    done, or after max_len steps.

    Returns tokens (B, L) int, L = the number of steps taken.
    """
    raise NotImplementedError
