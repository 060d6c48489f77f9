"""Exercise 17, wrong: a sentence keeps getting tokens after its EOS (no PAD, no "done")."""
import numpy as np

PAD, BOS, EOS = 0, 1, 2


def greedy_decode(step, batch_size, max_len):
    y = np.full(batch_size, BOS)
    tokens, done = [], np.zeros(batch_size, dtype=bool)
    for _ in range(max_len):
        log_probs = np.array(step(y), dtype=np.float64)
        log_probs[:, [PAD, BOS]] = -np.inf
        y = log_probs.argmax(axis=1)
        tokens.append(y)                                                       # wrong: no PAD after EOS
        done |= y == EOS
        if done.all():
            break
    return np.stack(tokens, axis=1)
