"""Exercise 18: the GNMT length penalty.

docs/concepts.md section 16. Log-probabilities only go down as a hypothesis grows, so plain beam
search favours short outputs; GNMT divides by a penalty that grows with the length L:

    lp(L) = ((5 + L) / 6) ** alpha          score = log P / lp(L)

Then run:

    minis2s exercise check 18
"""
import numpy as np


def length_penalty(length, alpha):
    """lp(L) for an int length and a float alpha >= 0. Returns a float."""
    raise NotImplementedError


def best_hypothesis(log_probs, lengths, alpha):
    """log_probs: (K,) log P of K finished hypotheses; lengths: (K,) their lengths.

    Returns the index (int) of the best one by log P / lp(L).
    """
    raise NotImplementedError
