"""Layers with PyTorch's names, layouts and default initialisations."""
from .module import Module, ModuleList, Parameter
from .layers import Dropout, Embedding, Linear
from .rnn import LSTM, LSTMCell
from . import utils

__all__ = ["Module", "ModuleList", "Parameter", "Linear", "Embedding", "Dropout", "LSTM",
           "LSTMCell", "utils"]
