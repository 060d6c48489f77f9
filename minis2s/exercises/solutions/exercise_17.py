"""Exercise 17, solved with the library's own greedy search (minis2s.search.greedy), driven by a
stand-in model whose decoder step is the given `step`."""
import numpy as np

from grad.tensor import Tensor
from minis2s import search


class _StepModel:
    """Just enough of a Seq2Seq for search.greedy: encode() gives nothing, step() calls `step`."""

    training = False

    def __init__(self, step, batch_size):
        self.batch_size, self.decoder = batch_size, self
        self.hidden_size, self._step = 1, step

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def encode(self, src, src_lengths):
        return Tensor(np.zeros((self.batch_size, 1, 1), dtype=np.float32)), None, []

    def weights(self):
        return None

    def step(self, y, feed, states, memory, pad_mask, w):
        return Tensor(np.asarray(self._step(y.numpy()))), feed, None


def greedy_decode(step, batch_size, max_len):
    src = np.zeros((batch_size, 1), dtype=np.int64)
    return search.greedy(_StepModel(step, batch_size), src, np.ones(batch_size), max_len=max_len).tokens
