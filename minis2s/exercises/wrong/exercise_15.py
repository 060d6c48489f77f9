"""Exercise 15, wrong: the model's own token fed with probability tf_ratio (the ratio read as the
probability of feeding the prediction)."""
import numpy as np

PAD, BOS = 0, 1


def choose_inputs(reference, prev_logits, tf_ratio, u):
    scores = np.array(prev_logits, dtype=np.float64)
    scores[:, [PAD, BOS]] = -np.inf
    predicted = scores.argmax(axis=1)
    return np.where(u < tf_ratio, predicted, reference)                        # wrong: 1 - tf_ratio
