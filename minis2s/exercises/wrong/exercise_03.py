"""Exercise 3, wrong: |V| counts only the training words, without </s> and <unk>."""
from collections import Counter


def add_k_prob(sentences, word, prev, k):
    words = {w for s in sentences for w in s}
    vocab = words | {"</s>", "<unk>"}
    bigrams, contexts = Counter(), Counter()
    for s in sentences:
        padded = ["<s>"] + [w for w in s] + ["</s>"]
        for h, w in zip(padded, padded[1:]):
            bigrams[h, w] += 1
            contexts[h] += 1
    word = word if word in vocab else "<unk>"
    prev = prev if prev in vocab or prev == "<s>" else "<unk>"
    return (bigrams[prev, word] + k) / (contexts[prev] + k * len(words))      # wrong: |words|
