"""Exercise 1, solved with the library's own functions (minis2s.metrics)."""
from minis2s import metrics


def entropy(p):
    return metrics.entropy(p)


def perplexity(cross_entropy):
    return metrics.perplexity(cross_entropy)


def cross_entropy_from_perplexity(ppl):
    return metrics.cross_entropy_from_perplexity(ppl)
