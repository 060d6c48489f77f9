"""Exercise 20: BLEU's brevity penalty and corpus BLEU.

docs/concepts.md section 17. With c the total hypothesis length and r the total reference
length over the corpus:

    BP   = 1 if c >= r, else exp(1 - r / c)        (0 if c = 0)
    BLEU = 100 * BP * exp((log p_1 + log p_2 + log p_3 + log p_4) / 4)     0 if any p_n is 0

The clipped counts of exercise 19 are given (from the library). Then run:

    minis2s exercise check 20
"""
import math

from minis2s.metrics import bleu_details


def clipped_counts(hypotheses, references, n):
    """(matches, total) of order n over the corpus (exercise 19), from the library."""
    details = bleu_details(hypotheses, references, max_n=n)
    return details["matches"][n - 1], details["totals"][n - 1]


def brevity_penalty(c, r):
    """c, r: total hypothesis and reference lengths (ints). Returns a float."""
    raise NotImplementedError


def corpus_bleu(hypotheses, references):
    """hypotheses, references: lists of token lists (one reference each). Returns BLEU in 0-100."""
    raise NotImplementedError
