"""Exercise 2, wrong: the mean of the per-sentence perplexities (each sentence counted with its
</s>), not the perplexity of the corpus."""
import math


def corpus_perplexity(logprob, sentences):
    per_sentence = [math.exp(-logprob(s) / (len(s) + 1)) for s in sentences]
    return sum(per_sentence) / len(per_sentence)
