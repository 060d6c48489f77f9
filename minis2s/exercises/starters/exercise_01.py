"""Exercise 1: entropy, perplexity and cross-entropy.

docs/concepts.md, sections 3 to 6. The entropy of a distribution is its EXPECTED information
content (the average surprise -log p of a sample); perplexity is the exponential of a
cross-entropy in nats. Write the bodies with NumPy or math, then run:

    minis2s exercise check 1
"""
import math

import numpy as np


def entropy(p):
    """H(p) = -sum_x p(x) log p(x) in nats (natural log).

    p: (K,) probabilities summing to 1; some may be exactly 0 (a term with p(x) = 0 counts 0).
    Returns a float.
    """
    raise NotImplementedError


def perplexity(cross_entropy):
    """The perplexity of a model whose cross-entropy is `cross_entropy` nats per token (float)."""
    raise NotImplementedError


def cross_entropy_from_perplexity(ppl):
    """The inverse of `perplexity`: the cross-entropy in nats per token (float)."""
    raise NotImplementedError
