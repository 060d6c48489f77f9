"""Temporary placeholder, replaced by the full metrics module."""
import math
from collections import Counter


def corpus_bleu(hyps, refs, max_n=4):
    match = [0] * max_n
    total = [0] * max_n
    c = r = 0
    for h, ref in zip(hyps, refs):
        c += len(h)
        r += len(ref)
        for n in range(1, max_n + 1):
            hc = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            rc = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
            match[n - 1] += sum(min(v, rc[k]) for k, v in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    if min(match) == 0:
        return 0.0
    logp = sum(math.log(m / t) for m, t in zip(match, total)) / max_n
    bp = 1.0 if c >= r else math.exp(1 - r / c)
    return 100 * bp * math.exp(logp)
