"""Packaging for minis2s: the ``grad`` engine and the ``minis2s`` library built on it."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "minis2s" / "__init__.py").read_text()).group(1)

setup(
    name="minis2s",
    version=VERSION,
    description="A readable autograd engine and LSTM seq2seq with attention, from scratch",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["grad", "grad.*", "minis2s", "minis2s.*"]),
    install_requires=["numpy>=2", "tqdm", "threadpoolctl"],
    extras_require={
        "test": ["pytest", "hypothesis", "array-api-strict", "pytest-xdist"],
        "plot": ["matplotlib"],
        "export": ["safetensors"],
        # CUDA 12; for CUDA 13 install cupy-cuda13x instead (see docs/backends.md).
        "gpu": ["cupy-cuda12x>=14.1"],
        "oracle": ["torch", "sacrebleu", "nltk"],
        # data-parallel training (docs/distributed.md): mpi4py and MPICH's wheel (mpiexec and
        # the library; no system MPI or compiler needed)
        "mpi": ["mpi4py", "mpich"],
    },
    entry_points={"console_scripts": ["minis2s=minis2s.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
