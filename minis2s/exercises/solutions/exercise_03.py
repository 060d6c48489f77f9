"""Exercise 3, solved with the library's own model (minis2s.lm.NGramLM)."""
from minis2s.lm import NGramLM


def add_k_prob(sentences, word, prev, k):
    return NGramLM(order=2, smoothing="add-k", k=k).fit(sentences).prob(word, [prev])
