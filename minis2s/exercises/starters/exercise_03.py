"""Exercise 3: add-k smoothing for a bigram model.

docs/concepts.md, section 1. With the conventions of minis2s.lm.NGramLM:

* every sentence w_1 ... w_n is read as <s> w_1 ... w_n </s> (<s> is context only);
* the vocabulary V is the distinct training words, plus </s> and <unk> (both can be predicted);
* a word that is not in V (as the predicted word or as the context) reads as <unk>;

    P(w | h) = (c(h w) + k) / (c(h) + k |V|)

where c(h w) counts the bigram "h w" in the padded training sentences and c(h) = sum_w c(h w).
Then run:

    minis2s exercise check 3
"""
from collections import Counter


def add_k_prob(sentences, word, prev, k):
    """P(word | prev) of an add-k bigram model trained on `sentences` (lists of words).

    prev may be "<s>" (the start of a sentence); word may be "</s>". Returns a float.
    """
    raise NotImplementedError
