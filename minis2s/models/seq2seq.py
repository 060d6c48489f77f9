"""``Seq2Seq``: encoder + attention decoder, with a training path and two inference paths.

Training (teacher forcing) feeds the *reference* previous token at every step: the decoder is a
conditional language model ``P(y_t | y_<t, x)`` trained by maximum likelihood. At inference no
reference exists, so the decoder feeds back its *own* predictions (``greedy``, ``beam_search`` in
``minis2s.search``): a different code path, and the source of exposure bias.
"""
from __future__ import annotations

from grad import backend as B
from grad import functional as F
from grad import nn, ops
from grad.tensor import Tensor

from ..data.vocab import BOS, EOS, PAD, UNK  # noqa: F401  (re-exported: minis2s.models.PAD, ...)
from ..decoding import LSTMDecodingState
from ..search import beam_search as _beam_search, greedy as _greedy
from .decoder import Decoder
from .encoder import Encoder


def as_ids(x) -> Tensor:
    """Token ids (list, host NumPy array or Tensor) as an int64 Tensor on the active backend."""
    return x if isinstance(x, Tensor) else Tensor(B.asarray(x, "int64"))


class Seq2Seq(nn.Module):
    """LSTM encoder-decoder with Luong attention and input feeding.

    ``Seq2Seq(src_vocab_size, tgt_vocab_size, emb_size=128, hidden_size=256, num_layers=2,
    dropout=0.2, pad_idx=0, attention="general" | "dot" | None, input_feeding=True,
    generator=None)``; the special token ids (``pad_idx`` and the BOS/EOS of search) are the
    vocabulary's, ``minis2s.data.vocab``. ``generator`` (a
    ``grad.Generator``) draws the initial weights and, later, the dropout masks.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, emb_size: int = 128,
                 hidden_size: int = 256, num_layers: int = 2, dropout: float = 0.2,
                 pad_idx: int = PAD, attention: str | None = "general", input_feeding: bool = True,
                 *, generator=None):
        super().__init__()
        if attention not in ("general", "dot", None):
            raise ValueError(f"attention must be 'general', 'dot' or None, got {attention!r}")
        from ..memory import model_bytes, require, seq2seq_params
        n_params = seq2seq_params(src_vocab_size, tgt_vocab_size, emb_size, hidden_size, num_layers,
                                  attention, input_feeding)
        require(model_bytes(n_params), f"a Seq2Seq model of {n_params:,} parameters (emb_size "
                f"{emb_size}, hidden_size {hidden_size}, num_layers {num_layers}, vocabularies "
                f"{src_vocab_size} and {tgt_vocab_size})")
        self.config = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                           emb_size=emb_size, hidden_size=hidden_size, num_layers=num_layers,
                           dropout=dropout, pad_idx=pad_idx, attention=attention,
                           input_feeding=input_feeding)
        self.pad_idx = pad_idx
        self.encoder = Encoder(src_vocab_size, emb_size, hidden_size, num_layers, dropout, pad_idx,
                               generator=generator)
        self.decoder = Decoder(tgt_vocab_size, emb_size, hidden_size, num_layers, dropout, pad_idx,
                               attention, input_feeding, generator=generator)

    def encode(self, src, src_lengths):
        """Returns ``memory (B, S, H)``, the PAD mask ``(B, S)`` and the decoder's initial states."""
        src = as_ids(src)
        memory, (h, c) = self.encoder(src, src_lengths)                   # (B, S, H), (L, B, H)
        pad_mask = src.data == self.pad_idx                               # (B, S) True at PAD
        return memory, pad_mask, Decoder.init_states(h, c)

    def logits(self, src, src_lengths, tgt_in, tf_ratio: float = 1.0, generator=None,
               return_attention: bool = False):
        """Unnormalised scores ``(B, T, V)`` of the training path (and attention ``(B, T, S)``)."""
        memory, pad_mask, states = self.encode(src, src_lengths)
        logits, attention = self.decoder(as_ids(tgt_in), states, memory, pad_mask, tf_ratio,
                                         generator, return_attention)
        return (logits, attention) if return_attention else logits

    def forward(self, src, src_lengths, tgt_in, tf_ratio: float = 1.0, generator=None,
                return_attention: bool = False):
        """``log P(y_t | y_<t, x)`` as ``(B, T, V)`` (and attention ``(B, T, S)`` on request)."""
        logits, attention = self.logits(src, src_lengths, tgt_in, tf_ratio, generator, True)
        log_probs = F.log_softmax(logits, dim=-1)
        return (log_probs, attention) if return_attention else log_probs

    def loss(self, src, src_lengths, tgt_in, tgt_out, tf_ratio: float = 1.0, generator=None,
             label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
        """Cross-entropy per predicted target token (PAD excluded, EOS counted), with the fused
        softmax-cross-entropy run once over all steps. ``reduction="sum"`` gives the total."""
        logits = self.logits(src, src_lengths, tgt_in, tf_ratio, generator)   # (B, T, V)
        vocab = logits.shape[-1]
        return F.cross_entropy(ops.reshape(logits, (-1, vocab)), ops.reshape(as_ids(tgt_out), (-1,)),
                               ignore_index=self.pad_idx, reduction=reduction,
                               label_smoothing=label_smoothing)

    # ------------------------------------------------------------------ inference
    def init_decoding(self, src, src_lengths) -> LSTMDecodingState:
        """Encode ``src`` ``(N, S)``; the decoder's state before its first step
        (``minis2s.decoding``: the interface greedy and beam search use)."""
        memory, pad_mask, states = self.encode(src, src_lengths)          # (N, S, H)
        feed = Tensor(B.zeros((memory.shape[0], self.decoder.hidden_size), like=memory.data))
        return LSTMDecodingState(states, feed, memory, pad_mask, self.decoder.weights())

    def decode_step(self, prev_tokens: Tensor, state: LSTMDecodingState):
        """One step: ``(log_probs (N, V), the next state, attention (N, S) or None)``."""
        states = list(state.states)
        log_probs, feed, attention = self.decoder.step(as_ids(prev_tokens), state.feed, states,
                                                       state.memory, state.pad_mask, state.weights)
        return log_probs, LSTMDecodingState(states, feed, state.memory, state.pad_mask,
                                            state.weights), attention

    def greedy(self, src, src_lengths, max_len: int = 50, bos: int = BOS, eos: int = EOS):
        return _greedy(self, src, src_lengths, max_len=max_len, bos=bos, eos=eos)

    def beam_search(self, src, src_lengths, beam_size: int = 5, n_best: int = 1,
                    length_penalty: float = 0.0, max_len: int = 50, bos: int = BOS, eos: int = EOS):
        return _beam_search(self, src, src_lengths, beam_size=beam_size, n_best=n_best,
                            length_penalty=length_penalty, max_len=max_len, bos=bos, eos=eos)
