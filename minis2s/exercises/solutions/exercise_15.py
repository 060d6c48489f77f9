"""Exercise 15, solved with the library's own rule: the ban on PAD and BOS that search and the
decoder share (minis2s.decoding.forbid) and the draw Decoder.forward makes (use the model's token
where the Bernoulli(1 - tf_ratio) draw, u < 1 - tf_ratio, is 1)."""
import numpy as np

from minis2s.decoding import forbid

PAD, BOS = 0, 1


def choose_inputs(reference, prev_logits, tf_ratio, u):
    predicted = np.argmax(forbid(np.asarray(prev_logits), (PAD, BOS)), axis=1)
    use_model = np.asarray(u) < 1.0 - tf_ratio
    return np.where(use_model, predicted, reference)
