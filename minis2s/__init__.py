"""minis2s: language models and LSTM sequence-to-sequence learning with attention, on ``grad``."""
__version__ = "0.1.0"
