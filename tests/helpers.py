"""Shared test helpers: the backends every engine test runs on."""
import pytest

import grad

BACKENDS = [
    "numpy",
    "array_api_strict",
    pytest.param("cupy", marks=pytest.mark.skipif(
        not grad.backend.gpu_available(),
        reason="no usable GPU (CuPy not installed or no CUDA device)")),
]
backends = pytest.mark.parametrize("backend", BACKENDS)
