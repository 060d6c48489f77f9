"""``minis2s export``: a trained model's weights as a safetensors file.

The tensors keep minis2s's own parameter names (``encoder.rnn.weight_ih_l0``,
``decoder.output_layer.weight``, ...), which follow ``torch.nn``'s names and layouts, so a
PyTorch model of the same architecture loads them with a name mapping and no transposes
(benchmarks/common.py ``load_minis2s_weights`` is one). The run's ``config.json`` (model sizes,
tokenizers, training settings) travels in the file's metadata under ``"minis2s_config"``.
Written with safetensors' NumPy API: no PyTorch needed, and no pickle anywhere.
safetensors is the optional extra ``minis2s[export]``, imported only here.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class ExportError(ValueError):
    pass


def _save_file():
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise ExportError("export needs the safetensors package: pip install 'minis2s[export]' "
                          "(or pip install safetensors)") from None
    return save_file


def export_safetensors(model_dir, out, checkpoint: str = "best") -> dict:
    """Write ``model_dir``'s weights (its ``best`` or ``last`` checkpoint) to ``out``; returns
    ``{name: shape}`` of what was written."""
    from grad import backend as B
    from . import load
    save_file = _save_file()
    translator = load(model_dir, checkpoint=checkpoint)
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    tensors = {name: np.ascontiguousarray(B.to_numpy(value))
               for name, value in translator.model.state_dict().items()}
    save_file(tensors, str(out), metadata={"format": "minis2s", "checkpoint": checkpoint,
                                           "minis2s_config": json.dumps(config, ensure_ascii=False)})
    return {name: tuple(t.shape) for name, t in tensors.items()}
