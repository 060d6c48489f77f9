"""Exercise 19, wrong: every hypothesis n-gram found in the reference counts, without clipping."""
from collections import Counter


def modified_precision(hypotheses, references, n):
    matches = total = 0
    for hyp, ref in zip(hypotheses, references):
        grams = [tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1)]
        ref_grams = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        matches += sum(1 for g in grams if ref_grams[g] > 0)                   # wrong: not clipped
        total += len(grams)
    return matches, total
