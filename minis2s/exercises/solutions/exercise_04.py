"""Exercise 4, solved with the library's own model (minis2s.lm.NGramLM)."""
from minis2s.lm import NGramLM


def kneser_ney_prob(sentences, word, prev, discount=0.75):
    lm = NGramLM(order=2, smoothing="kneser-ney", discount=discount).fit(sentences)
    return lm.prob(word, [prev])
