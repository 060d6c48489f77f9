"""Layers with PyTorch's names, layouts and default initialisations."""
from .module import Module, ModuleList, Parameter
from .layers import Dropout, Embedding, LayerNorm, Linear
from .rnn import LSTM, LSTMCell
from .attention import MultiheadAttention
from .transformer import (PositionalEncoding, TransformerDecoder, TransformerDecoderLayer,
                          TransformerEncoder, TransformerEncoderLayer,
                          generate_square_subsequent_mask, sinusoidal_encoding)
from . import utils

__all__ = ["Module", "ModuleList", "Parameter", "Linear", "Embedding", "Dropout", "LayerNorm",
           "LSTM", "LSTMCell", "MultiheadAttention", "TransformerEncoderLayer",
           "TransformerDecoderLayer", "TransformerEncoder", "TransformerDecoder",
           "PositionalEncoding", "generate_square_subsequent_mask", "sinusoidal_encoding", "utils"]
