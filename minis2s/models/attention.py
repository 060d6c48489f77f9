"""Luong attention: a differentiable dictionary lookup.

A Python dict returns the value whose key *equals* the query. Attention returns a *weighted sum* of
all the values, each weighted by how similar its key is to the query, so that the lookup has a
gradient. In seq2seq (Luong et al., 2015):

* the query ``q`` comes from the decoder's current state ``h_t``;
* the keys and the values are the encoder's outputs ``H_src`` (one vector per source token).

"general" attention first turns the decoder state into a better query with a learned linear map,
``q = W_a h_t``; "dot" uses ``q = h_t`` as it is. Then, for the whole batch at once::

    scores  = bmm(q, H_src^T)        (B, 1, S)   similarity of the query to every key
    scores[PAD] = -inf                            padding must get exactly zero weight
    a       = softmax(scores)        (B, 1, S)   the attention weights, summing to 1
    context = bmm(a, H_src)          (B, 1, H)   the weighted sum of the values
    h~_t    = tanh(W_c [h_t; context])  (B, H)   the attentional hidden state
"""
from __future__ import annotations

from grad import functional as F
from grad import nn, ops
from grad.modes import is_reference_mode
from grad.tensor import Tensor


class LuongAttention(nn.Module):
    """Luong attention with ``kind="general"`` (``q = W_a h``) or ``"dot"`` (``q = h``).

    Parameters: ``W_a`` as ``query.weight`` ``(H, H)`` (general only) and ``W_c`` as
    ``combine.weight`` ``(H, 2H)``, both without bias (as in the paper).
    """

    def __init__(self, hidden_size: int, kind: str = "general", *, generator=None):
        super().__init__()
        if kind not in ("general", "dot"):
            raise ValueError(f"attention kind must be 'general' or 'dot', got {kind!r}")
        self.kind, self.hidden_size = kind, hidden_size
        self.query = nn.Linear(hidden_size, hidden_size, bias=False, generator=generator) \
            if kind == "general" else None
        self.combine = nn.Linear(2 * hidden_size, hidden_size, bias=False, generator=generator)

    def split_combine(self):
        """``W_c = [W_ch | W_cc]``: ``W_c [h; context] = W_ch h + W_cc context``. Splitting the
        weight once per batch avoids a concatenation copy at every decoder step."""
        w = self.combine.weight
        n = self.hidden_size
        return w[:, :n], w[:, n:]                                       # (H, H) each

    def forward(self, h_t: Tensor, memory: Tensor, pad_mask=None, combine=None):
        """``h_t``: ``(B, H)`` decoder state; ``memory``: ``(B, S, H)`` encoder outputs (keys and
        values); ``pad_mask``: ``(B, S)`` bool array, True at source padding.

        Returns ``(h_tilde (B, H), weights (B, S))``. ``combine`` optionally passes the split
        ``W_c`` from ``split_combine()`` (the decoder does, once per batch).

        The lookup is ``grad.functional.attention_lookup``, one node with a hand-written
        backward; under ``grad.reference_mode()`` it runs ``attention_lookup_reference``, the same
        math op by op (scores, padding masked, softmax, weighted sum: read that one), and
        ``h~`` is computed from the concatenation ``[h_t; context]`` as written, not from the
        split ``W_c`` (the same numbers).
        """
        q = self.query(h_t) if self.query is not None else h_t            # (B, H)
        context, weights = F.attention_lookup(q, memory, pad_mask)     # (B, H), (B, S)
        if is_reference_mode():   # as written in the paper: one product with [h_t; context]
            return ops.tanh(self.combine(ops.cat([h_t, context], dim=1))), weights  # (B, H)
        w_ch, w_cc = combine if combine is not None else self.split_combine()
        h_tilde = ops.tanh(F.linear(h_t, w_ch) + F.linear(context, w_cc))  # (B, H)
        return h_tilde, weights

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, kind={self.kind!r}"
