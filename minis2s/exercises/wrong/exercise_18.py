"""Exercise 18, wrong: (5 + L) ** alpha / 6, the parentheses forgotten."""
import numpy as np


def length_penalty(length, alpha):
    return (5.0 + length) ** alpha / 6.0                                       # wrong: ((5 + L) / 6) ** alpha


def best_hypothesis(log_probs, lengths, alpha):
    scores = [lp / length_penalty(n, alpha) for lp, n in zip(log_probs, lengths)]
    return int(np.argmax(scores))
