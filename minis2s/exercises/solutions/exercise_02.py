"""Exercise 2, solved with the library's own functions (minis2s.metrics.CorpusStats)."""
from minis2s.metrics import CorpusStats


def corpus_perplexity(logprob, sentences):
    stats = CorpusStats()
    for s in sentences:
        stats.add(nll_sum=-logprob(s), n_tokens=len(s) + 1)
    return stats.perplexity
