"""Data-parallel training over MPI: ``mpiexec -n N minis2s train`` (docs/distributed.md).

Every rank (process) holds the whole model. Each global batch (``--batch-size`` sentences, the
same batches in the same order as one process with the same seed would build) is cut into N
contiguous shards, one per rank::

    global batch (64)   | rank 0: rows 0-31 | rank 1: rows 32-63 |
    each rank           forward + backward on its shard -> gradient of its shard's summed loss
    Allreduce (sum)     one flat buffer of all gradients -> every rank holds the global sum
    every rank          the same clipping (global norm) and the same optimiser step

Because each rank divides its summed loss by the *global* count of target tokens
(``sum_count``), the summed gradients are exactly the single process's gradient over the global
batch; only the order of the floating-point additions differs. A rank whose shard is empty (fewer
sentences than ranks) contributes zero gradient and zero tokens and still joins every collective.

A launch is recognised by the launchers' environment (``detect_launch``): ``PMI_RANK`` /
``PMI_SIZE`` (MPICH's hydra ``mpiexec``, Intel MPI), ``OMPI_COMM_WORLD_SIZE`` (Open MPI),
``PMIX_RANK`` (PMIx launchers), ``SLURM_PROCID`` / ``SLURM_NTASKS`` (``srun``). One rank
(``-n 1``) is a plain single-process run. mpi4py is imported only when a launch with more than
one rank is seen; without it the command stops with one line naming the ``[mpi]`` extra.

Transport: when the parameters live in one flat buffer (``grad.flat.FlatParameters``, made by
``grad.optim.Adam``), their gradients are gathered once into its flat gradient buffer (each
``.grad`` a view of it) and that buffer is summed IN PLACE by one ``Allreduce``: clipping and Adam
then read the same buffer, with no copy back. Otherwise the gradients are gathered into one new
contiguous buffer (``grad.flat.FlatLayout``), summed, and cut back into per-parameter views.
Either buffer is copied to host memory when it lives on a GPU (``grad.backend.to_numpy``: a
no-op for NumPy); staging through host memory is correct with any MPI build (no CUDA-aware MPI
needed).
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

EXTRA_HINT = 'pip install "minis2s[mpi]" (mpi4py and the mpich wheel, which ships mpiexec)'
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class LaunchError(ValueError):
    """An MPI launch this process cannot join (mpi4py missing, a command that does not run
    data-parallel); the message is one line."""


class RanksDiverged(RuntimeError):
    """The ranks' parameters differ (their checksums disagree): they would train apart."""
    collective = True            # raised on every rank at the same point, with the same message


@dataclass(frozen=True)
class Launch:
    """What the launcher's environment says about this process."""
    launcher: str                # "mpiexec (hydra)", "Open MPI", "PMIx", "srun"
    variable: str                # the variable that gave it away, as NAME=VALUE
    rank: int
    size: int | None             # None: not said by the environment (MPI will tell)
    local_size: int | None       # ranks on this node, where the launcher says


def _int(env, name):
    try:
        return int(env[name])
    except (KeyError, ValueError):
        return None


def detect_launch(env=None) -> Launch | None:
    """The MPI launch this process is part of, from its environment; None for a plain run."""
    env = os.environ if env is None else env
    if "PMI_RANK" in env or "PMI_SIZE" in env:
        return Launch("mpiexec (hydra)", f"PMI_SIZE={env.get('PMI_SIZE', '?')}",
                      _int(env, "PMI_RANK") or 0, _int(env, "PMI_SIZE"), _int(env, "MPI_LOCALNRANKS"))
    if "OMPI_COMM_WORLD_SIZE" in env:
        return Launch("Open MPI", f"OMPI_COMM_WORLD_SIZE={env['OMPI_COMM_WORLD_SIZE']}",
                      _int(env, "OMPI_COMM_WORLD_RANK") or 0, _int(env, "OMPI_COMM_WORLD_SIZE"),
                      _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE"))
    if "PMIX_RANK" in env:
        return Launch("PMIx", f"PMIX_RANK={env['PMIX_RANK']}", _int(env, "PMIX_RANK") or 0,
                      None, None)
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:     # a job step (srun), not the batch script
        return Launch("srun", f"SLURM_PROCID={env['SLURM_PROCID']}", _int(env, "SLURM_PROCID") or 0,
                      _int(env, "SLURM_STEP_NUM_TASKS") or _int(env, "SLURM_NTASKS"), None)
    return None


def is_parallel_launch(launch: Launch | None) -> bool:
    """A launch of more than one rank (or of an unknown number): data-parallel."""
    return launch is not None and (launch.size is None or launch.size > 1)


def limit_blas_before_numpy(env=None) -> None:
    """Under a parallel launch, set the BLAS thread variables (unless the user did) to cores /
    ranks on this node, before NumPy loads its BLAS: OpenBLAS starts its thread pool at load
    time, and N ranks x all-cores spinning threads slow each other by an order of magnitude.
    The exact count (and ``--threads``) is then set through threadpoolctl."""
    env = os.environ if env is None else env
    launch = detect_launch(env)
    if not is_parallel_launch(launch):
        return
    from .threads import allowed_cores
    local = launch.local_size or launch.size or 1
    n = max(1, allowed_cores() // max(local, 1))
    for var in BLAS_VARS:
        env.setdefault(var, str(n))


def threads_per_rank(local_size: int) -> int:
    """BLAS threads each rank gets by default: the cores it may run on / ranks on this node."""
    from .threads import allowed_cores
    return max(1, allowed_cores() // max(local_size, 1))


# ----------------------------------------------------------------------------- the world
_WORLD = None


def world():
    """The communicator set up by ``init`` (None in a plain single-process run)."""
    return _WORLD


def init(env=None):
    """Join the MPI job this process was launched in, if any: returns the ``Communicator`` (also
    kept for ``world()``), or None for a plain run (no launcher, or one rank)."""
    global _WORLD
    launch = detect_launch(env)
    if not is_parallel_launch(launch):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise LaunchError(f"launched by {launch.launcher} ({launch.variable}) for data-parallel "
                          f"training, but mpi4py is not installed: {EXTRA_HINT}") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return None
    _WORLD = Communicator(comm)
    return _WORLD


def library_name(MPI) -> str:
    """``MPICH 5.0.2``, ``Open MPI v5.0.3``, ...: the first line of the library's version."""
    text = MPI.Get_library_version().strip().splitlines()[0]
    if text.startswith("MPICH Version:"):
        return "MPICH " + text.split(":", 1)[1].strip()
    return " ".join(text.split(",")[0].split())


class Communicator:
    """The ranks of one data-parallel run and the collectives the trainer uses. Every method is
    collective: each rank must call it, in the same order (the trainer makes sure of it)."""

    def __init__(self, mpi_comm):
        from mpi4py import MPI
        self.MPI = MPI
        self.mpi = mpi_comm
        self.rank = mpi_comm.Get_rank()
        self.size = mpi_comm.Get_size()
        node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = node.Get_size()
        node.Free()
        self.library = library_name(MPI)
        self._layouts = {}
        # the last sum_gradients: seconds inside Allreduce, bytes of the buffer
        self.last_allreduce_s = 0.0
        self.last_bytes = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ sharding
    def shard_bounds(self, n: int) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of an ``n``-row global batch for this rank: contiguous shards whose
        sizes differ by at most one, the larger ones first (empty when n < ranks)."""
        q, r = divmod(n, self.size)
        lo = self.rank * q + min(self.rank, r)
        return lo, lo + q + (1 if self.rank < r else 0)

    def shard(self, items):
        lo, hi = self.shard_bounds(len(items))
        return items[lo:hi]

    # ------------------------------------------------------------------ small reductions
    def sum_count(self, n: int) -> int:
        """The sum over ranks of an integer count (e.g. target tokens)."""
        import numpy as np
        buf = np.array([int(n)], dtype=np.int64)
        self.mpi.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return int(buf[0])

    def sum_values(self, values) -> list[float]:
        """The sums over ranks of a few floats, in float64."""
        import numpy as np
        buf = np.array([float(v) for v in values], dtype=np.float64)
        self.mpi.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return [float(v) for v in buf]

    def any(self, flag: bool) -> bool:
        return self.sum_count(1 if flag else 0) > 0

    def barrier(self) -> None:
        self.mpi.Barrier()

    def bcast(self, obj, root: int = 0):
        """A small Python object (a path, a list of numbers) from ``root`` to every rank."""
        return self.mpi.bcast(obj, root=root)

    def allgather(self, obj) -> list:
        """One small Python object per rank, in rank order, on every rank."""
        return self.mpi.allgather(obj)

    def abort(self, code: int) -> None:
        """End every rank of the job now (``MPI_Abort``): for a failure only this rank saw, which
        would otherwise leave the others waiting in a collective for ever."""
        self.mpi.Abort(code)

    # ------------------------------------------------------------------ gradients
    def _layout(self, arrays, extra: int):
        from grad.flat import FlatLayout
        key = (tuple(tuple(a.shape) for a in arrays), str(arrays[0].dtype), extra)
        if key not in self._layouts:
            self._layouts[key] = FlatLayout([a.shape for a in arrays] + [(extra,)], arrays[0].dtype)
        return self._layouts[key]

    def sum_gradients(self, params) -> None:
        """Replace every parameter's ``.grad`` by its sum over the ranks, with ONE ``Allreduce``
        over a flat buffer. A parameter without a gradient on a rank counts as zero there; one
        without a gradient on every rank keeps ``grad = None`` (so the optimiser skips it, as a
        single process would). Afterwards every rank holds bit-identical gradients.

        When the parameters live in one flat buffer (``grad.flat.FlatParameters``, which
        ``grad.optim.Adam`` makes by default) the sum is taken IN PLACE over its gradient buffer
        (``gather_grads``: the gradients are its views), which clipping and Adam then use as it
        is; which parameters had a gradient travels in a second, tiny ``Allreduce``. Otherwise
        the gradients and those flags are gathered into one new buffer and cut back."""
        import numpy as np
        from grad import backend as B
        from grad.flat import flat_of
        params = list(params)
        n = len(params)
        flat = flat_of(params)
        if flat is not None:
            buf = flat.gather_grads()                                       # (total,), views
            counts = np.array([p.grad is not None for p in params], dtype=np.int64)
            host = B.to_numpy(buf)                      # NumPy: the buffer itself; GPU: a copy
            staged = not (host.flags.c_contiguous and host.flags.writeable) or \
                not np.may_share_memory(host, B.to_numpy(flat.grad_views[0]))
            if staged:
                host = np.array(host)
            self.last_bytes = host.nbytes + counts.nbytes
            t0 = time.perf_counter()
            self.mpi.Allreduce(self.MPI.IN_PLACE, counts, op=self.MPI.SUM)
            self.mpi.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            self.last_allreduce_s = time.perf_counter() - t0
            if staged:
                buf[...] = B.from_numpy(host)
            for p, gv, count in zip(params, flat.grad_views, counts):
                p.grad = gv if count > 0 else None
            return
        datas = [p.data for p in params]
        layout = self._layout(datas, n)
        present = B.from_numpy(np.array([p.grad is not None for p in params],
                                        dtype=B.dtype_name(layout.dtype)))
        buf = layout.gather([p.grad for p in params] + [present])          # (total,)
        host = B.to_numpy(buf)                                              # GPU: staged on host
        if not (host.flags.c_contiguous and host.flags.writeable):
            host = np.array(host)
        self.last_bytes = host.nbytes
        t0 = time.perf_counter()
        self.mpi.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        self.last_allreduce_s = time.perf_counter() - t0
        counts = host[layout.total - n:]
        pieces = layout.scatter(B.from_numpy(host))
        for p, g, count in zip(params, pieces, counts):
            p.grad = g if count > 0 else None

    def broadcast_parameters(self, params, root: int = 0) -> None:
        """Every rank takes ``root``'s parameter values (one ``Bcast`` of a flat buffer): into
        the parameters' own flat buffer when they live in one (``grad.flat``), else through a
        gathered copy, written into each parameter with ``grad.flat.assign``."""
        import numpy as np
        from grad import backend as B
        from grad.flat import FlatLayout, assign, flat_of
        params = list(params)
        flat = flat_of(params)
        if flat is not None:
            host = B.to_numpy(flat.data)
            staged = not (host.flags.c_contiguous and host.flags.writeable) or \
                not np.may_share_memory(host, B.to_numpy(flat.views[0]))
            if staged:
                host = np.array(host)
            self.mpi.Bcast(host, root=root)
            if staged:
                flat.data[...] = B.from_numpy(host)
            return
        layout = FlatLayout.of([p.data for p in params])
        host = B.to_numpy(layout.gather([p.data for p in params]))
        if not (host.flags.c_contiguous and host.flags.writeable):
            host = np.array(host)
        self.mpi.Bcast(host, root=root)
        for p, piece in zip(params, layout.scatter(B.from_numpy(host))):
            assign(p, piece)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def checksum(params) -> str:
        """A digest of the parameters' exact bits (SHA-256, first 16 hex digits)."""
        from grad import backend as B
        h = hashlib.sha256()
        for p in params:
            h.update(B.to_numpy(p.data).tobytes())
        return h.hexdigest()[:16]

    def check_parameters(self, params, where: str) -> None:
        """Compare the ranks' parameter checksums; on any difference every rank raises the same
        ``RanksDiverged`` (the ranks would otherwise train apart, silently)."""
        digests = self.allgather(self.checksum(params))
        if len(set(digests)) > 1:
            differ = [r for r, d in enumerate(digests) if d != digests[0]]
            raise RanksDiverged(f"the ranks' parameters differ at {where} (checksum of rank 0: "
                                f"{digests[0]}; rank{'s' if len(differ) > 1 else ''} "
                                f"{', '.join(map(str, differ))} differ): the data-parallel run "
                                f"stopped instead of training apart; the last checkpoint is intact")

    # ------------------------------------------------------------------ words
    def header(self, global_batch: int, blas_threads) -> str:
        """``data-parallel over MPI: 2 ranks (MPICH 5.0.2), global batch 64 = 2 x 32, 1 BLAS
        thread per rank``."""
        q, r = divmod(global_batch, self.size)
        split = f"{self.size} x {q}" if r == 0 else f"{r} x {q + 1} + {self.size - r} x {q}"
        word = "thread" if blas_threads == 1 else "threads"
        return (f"data-parallel over MPI: {self.size} ranks ({self.library}), global batch "
                f"{global_batch} = {split}, {blas_threads} BLAS {word} per rank")


class CollectiveGuard:
    """The divergence guard (``minis2s.guard.DivergenceGuard``) of one rank, with its three
    checks decided by all ranks together: each check first sums over the ranks what the check
    looks at, so every rank takes the same decision at the same step.

    ``check_loss(share)``   ``share``: this rank's part of the global per-token loss; the sum is
                            the global loss (kept in ``value``). Also summed: whether any rank
                            was asked to stop (``stop_all``) and the floating-point problems any
                            rank's forward pass flagged (the guard's rule 4).
    ``check_grad_norm``     the norm is the same on every rank (the gradients were summed); the
                            backward pass's flags are shared.
    ``check_params``        the update is the same on every rank; its flags are shared.

    Each check is one small ``Allreduce`` of a few float64 numbers."""

    def __init__(self, guard, comm, stop_requested=lambda: False):
        self.guard, self.comm, self._stop_requested = guard, comm, stop_requested
        self.value = None
        self.stop_all = False

    def _shared(self, values=()):
        """Sum ``values`` and the guard's flags over the ranks; the flags become the union."""
        from .guard import WATCHED
        flags = [1.0 if kind in self.guard.step_flags else 0.0 for kind in WATCHED]
        sums = self.comm.sum_values([*values, *flags])
        self.guard.step_flags = [kind for kind, n in zip(WATCHED, sums[len(values):]) if n > 0]
        return sums[:len(values)]

    def check_loss(self, share: float):
        self.value, stops = self._shared([share, 1.0 if self._stop_requested() else 0.0])
        self.stop_all = stops > 0
        return self.guard.check_loss(self.value)

    def check_grad_norm(self, norm: float):
        self._shared()
        return self.guard.check_grad_norm(norm)

    def check_params(self, parameters):
        self._shared()
        return self.guard.check_params(parameters)


def rank_seed(seed: int, rank: int, iteration: int) -> list[int]:
    """The seed of rank ``rank``'s random streams (dropout, scheduled sampling) in a
    data-parallel run, from (seed, rank) and the iteration the run starts or resumes at, so the
    ranks draw different masks for their different rows, reproducibly."""
    return [int(seed), int(rank), int(iteration)]
