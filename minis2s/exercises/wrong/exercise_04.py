"""Exercise 4, wrong: the unigram level uses the raw counts c(w) (how often w occurs), not the
continuation counts N1+(. w) (in how many contexts)."""
from collections import Counter, defaultdict


def kneser_ney_prob(sentences, word, prev, discount=0.75):
    vocab = {w for s in sentences for w in s} | {"</s>", "<unk>"}
    bigrams = Counter()
    for s in sentences:
        padded = ["<s>"] + list(s) + ["</s>"]
        bigrams.update(zip(padded, padded[1:]))
    word = word if word in vocab else "<unk>"
    prev = prev if prev in vocab or prev == "<s>" else "<unk>"
    unigram = Counter()
    for (h, w), c in bigrams.items():
        unigram[w] += c                                                        # wrong: raw counts
    total = sum(unigram.values())
    p1 = (max(unigram[word] - discount, 0) + discount * len(unigram) / len(vocab)) / total
    following = defaultdict(Counter)
    for (h, w), c in bigrams.items():
        following[h][w] = c
    c_h = sum(following[prev].values())
    if c_h == 0:
        return p1
    return (max(following[prev][word] - discount, 0) + discount * len(following[prev]) * p1) / c_h
