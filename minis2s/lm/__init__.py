"""Language models: n-gram models by counting (``ngram``), built-in corpora (``corpora``),
and an LSTM language model on the ``grad`` engine (``lstm_lm``, ``training``; imported on
demand, not here, so the counting models need only numpy).

    from minis2s.lm import NGramLM, load_builtin

    corpus = load_builtin("markov")
    lm = NGramLM(order=3, smoothing="kneser-ney").fit(corpus.train)
    lm.perplexity(corpus.test)      # vs exp(corpus.info["entropy_rate_nats"])
"""
from .corpora import (BUILTINS, Corpus, MarkovSource, brackets, is_well_nested, load_builtin,
                      markov_source, pydoc_corpus)
from .ngram import NGramLM

__all__ = ["BUILTINS", "Corpus", "MarkovSource", "NGramLM", "brackets", "is_well_nested",
           "load_builtin", "markov_source", "pydoc_corpus"]
