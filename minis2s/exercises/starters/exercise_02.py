"""Exercise 2: the perplexity of a corpus, and what is counted.

docs/concepts.md, section 6. A sentence w_1 ... w_n is predicted as w_1 ... w_n </s>: it has
n + 1 predicted tokens (</s> counted, <s> never predicted). The perplexity of a corpus is exp of
the cross-entropy per predicted token of the WHOLE corpus. Then run:

    minis2s exercise check 2
"""
import math


def corpus_perplexity(logprob, sentences):
    """Perplexity of a language model on `sentences`.

    logprob(sentence) -> log P(w_1 ... w_n </s>) in nats, for a sentence given as a list of
    words (the </s> is added by the model; an empty list is the empty sentence).
    sentences: a list of word lists.
    Returns a float.
    """
    raise NotImplementedError
