"""The decoder-step interface: what greedy and beam search (``minis2s.search``) ask of a model.

A model that can be searched has two methods::

    state = model.init_decoding(src, src_lengths)            # encode; one row per sentence (N = B)
    log_probs, state, attention = model.decode_step(prev_tokens, state)

* ``prev_tokens``: ``(N,)`` int64 Tensor, the token each row produced last (BOS at the start);
* ``log_probs``: ``(N, V)`` Tensor, ``log P(next token | prefix, source)`` per row;
* ``attention``: ``(N, S)`` weights over the source (array or Tensor), or None;
* ``state``: whatever the model carries from step to step (for the LSTM seq2seq: the LSTM states
  per layer, the previous attentional state h~ and the encoder outputs), with one method,
  ``state.reorder(index)``, which returns the state with every per-row array gathered along the
  batch axis by the int index ``(N',)``. Beam search uses it twice: to expand each sentence to
  its beams (``index = [0, 0, 0, 1, 1, 1, ...]``) and, after each step, to follow the surviving
  beams.

Search also needs two small pieces shared with training and the language model, kept here once:
``forbid`` (PAD and BOS are never produced or fed back) and ``as_index``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from grad import backend as B
from grad import ops
from grad.tensor import Tensor

from .data.vocab import BOS, PAD


def forbid(scores, tokens=(PAD, BOS)):
    """``scores`` ``(N, V)`` (a backend array) with the columns of ``tokens`` set to -inf, so that
    an argmax, a top-k or a sample never picks them. Search forbids PAD and BOS (never produced),
    so does the decoder when it feeds its own predictions (``tf_ratio < 1``) and the LSTM
    language model when it generates."""
    xp = B.xp
    ids = B.arange(scores.shape[1], like=scores)                           # (V,)
    banned = ids == tokens[0]
    for token in tokens[1:]:
        banned = banned | (ids == token)                                   # (V,)
    return xp.where(banned[None, :], B.full((), float("-inf"), like=scores), scores)


def as_index(index):
    """A row index (host NumPy array, list or backend array) as a backend int64 array."""
    if isinstance(index, Tensor):
        return index.data
    return B.asarray(index, "int64")


@dataclass
class LSTMDecodingState:
    """The LSTM seq2seq decoder between two steps (``Seq2Seq.init_decoding``), per row:

    * ``states``: one packed ``[h | c]`` ``(N, 2H)`` per decoder layer;
    * ``feed``: the previous attentional state ``h~_{t-1}`` ``(N, H)`` (input feeding; 0 at first);
    * ``memory``: the encoder outputs ``(N, S, H)``; ``pad_mask``: ``(N, S)`` True at source PAD;
    * ``weights``: the decoder's per-batch weight views (``Decoder.weights()``), not per row.
    """
    states: list
    feed: Tensor
    memory: Tensor
    pad_mask: object
    weights: dict = field(repr=False)

    def reorder(self, index) -> "LSTMDecodingState":
        """Every per-row array gathered along the batch axis by ``index`` ``(N',)``."""
        rows = as_index(index)
        return LSTMDecodingState([ops.index_select(s, 0, rows) for s in self.states],
                                 ops.index_select(self.feed, 0, rows),
                                 ops.index_select(self.memory, 0, rows),
                                 B.xp.take(self.pad_mask, rows, axis=0), self.weights)
