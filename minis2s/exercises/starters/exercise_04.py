"""Exercise 4: interpolated Kneser-Ney smoothing for a bigram model.

docs/concepts.md, sections 1 and 7. Conventions as in exercise 3 (<s> w_1 ... w_n </s>; V = the
distinct training words + </s> + <unk>; unknown words read as <unk>). With one discount D:

    P2(w | h) = max(c(h w) - D, 0) / c(h)  +  D * N1+(h .) / c(h) * P1(w)      if c(h) > 0
    P2(w | h) = P1(w)                                                         if c(h) = 0

    P1(w)     = max(N1+(. w) - D, 0) / N1+(. .)  +  D * n_w / N1+(. .) * 1 / |V|

c(h w): the count of the bigram "h w"; c(h) = sum_w c(h w); N1+(h .): how many distinct words
follow h; N1+(. w): how many distinct tokens (<s> included) are seen right before w (the
CONTINUATION count); N1+(. .) = sum_w N1+(. w); n_w: how many words have N1+(. w) > 0.
Then run:

    minis2s exercise check 4
"""
from collections import Counter, defaultdict


def kneser_ney_prob(sentences, word, prev, discount=0.75):
    """P(word | prev) of an interpolated Kneser-Ney bigram model trained on `sentences`.

    sentences: lists of words; prev may be "<s>"; word may be "</s>". Returns a float.
    """
    raise NotImplementedError
