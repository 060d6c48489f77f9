"""The seq2seq model: encoder (bi-LSTM), Luong attention, decoder (input feeding), Seq2Seq."""
from .attention import LuongAttention
from .decoder import Decoder
from .encoder import Encoder
from .seq2seq import BOS, EOS, PAD, UNK, Seq2Seq

__all__ = ["LuongAttention", "Encoder", "Decoder", "Seq2Seq", "PAD", "BOS", "EOS", "UNK"]
