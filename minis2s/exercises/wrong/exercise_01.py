"""Exercise 1, wrong: perplexity and cross-entropy swapped, as course notes sometimes write
them ("the cross-entropy is the exponential of the perplexity")."""
import math

import numpy as np


def entropy(p):
    p = np.asarray(p, dtype=np.float64)
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def perplexity(cross_entropy):
    return math.log(cross_entropy) if cross_entropy > 0 else float("-inf")    # wrong: log


def cross_entropy_from_perplexity(ppl):
    return math.exp(ppl)                                                       # wrong: exp
