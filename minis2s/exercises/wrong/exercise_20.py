"""Exercise 20, wrong: the brevity penalty as exp(1 - c / r), the ratio upside down."""
import math

from minis2s.metrics import bleu_details


def clipped_counts(hypotheses, references, n):
    details = bleu_details(hypotheses, references, max_n=n)
    return details["matches"][n - 1], details["totals"][n - 1]


def brevity_penalty(c, r):
    if c == 0:
        return 0.0
    return 1.0 if c >= r else math.exp(1.0 - c / r)                           # wrong: r / c


def corpus_bleu(hypotheses, references):
    c = sum(len(h) for h in hypotheses)
    r = sum(len(x) for x in references)
    logs = []
    for n in range(1, 5):
        matches, total = clipped_counts(hypotheses, references, n)
        if matches == 0:
            return 0.0
        logs.append(math.log(matches / total))
    return 100.0 * brevity_penalty(c, r) * math.exp(sum(logs) / 4)
