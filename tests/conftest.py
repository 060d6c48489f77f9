"""Test configuration: one BLAS thread per worker, hypothesis profiles, the repo on sys.path."""
import os
import sys

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hypothesis import settings  # noqa: E402

settings.register_profile("dev", max_examples=10)
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, print_blob=True)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ----------------------------------------------------------------------------- MPI tests
# Tests marked ``mpi`` start ``mpiexec -n 2`` in subprocesses. MPICH's ranks busy-poll while they
# wait, so beside pytest-xdist workers on a 2-core machine they stall: they run only when asked
# for, alone, as a separate step (.ci/run): ``python -m pytest -m mpi -n 0``.
MPI_ALONE = ("MPI test: runs only alone, as `python -m pytest -m mpi -n 0` (MPICH ranks busy-poll "
             "while waiting and stall beside pytest-xdist workers; .ci/run has that step)")


def pytest_configure(config):
    config.addinivalue_line("markers", f"mpi: {MPI_ALONE}")


def pytest_collection_modifyitems(config, items):
    import pytest
    markexpr = config.getoption("markexpr", "") or ""
    asked = "mpi" in markexpr.replace("not mpi", "")
    workers = config.getoption("numprocesses", None)
    alone = not workers and not hasattr(config, "workerinput")     # no xdist, or -n 0
    if asked and alone:
        return
    skip = pytest.mark.skip(reason=MPI_ALONE if not asked else
                            "MPI test asked for under pytest-xdist workers: run it with -n 0")
    for item in items:
        if item.get_closest_marker("mpi") is not None:
            item.add_marker(skip)
