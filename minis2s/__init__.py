"""minis2s: language models and LSTM sequence-to-sequence learning with attention, on ``grad``."""
__version__ = "0.1.0"


def load(run_dir, checkpoint: str = "best"):
    """Load a trained model directory; see ``minis2s.translator.load``."""
    from .translator import load as _load
    return _load(run_dir, checkpoint)
