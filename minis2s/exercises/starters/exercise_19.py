"""Exercise 19: BLEU's modified (clipped) n-gram precision.

docs/concepts.md section 17. For one order n, over the whole corpus:

    matches = sum over sentences, over the hypothesis' n-grams g: min(count_hyp(g), count_ref(g))
    total   = sum over sentences of the number of n-grams in the hypothesis

Then run:

    minis2s exercise check 19
"""
from collections import Counter


def modified_precision(hypotheses, references, n):
    """hypotheses, references: lists of token lists (one reference per hypothesis); n >= 1.

    Returns (matches, total) as ints; the precision p_n is matches / total.
    """
    raise NotImplementedError
