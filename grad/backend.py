"""The array backend: which array library ``grad`` computes with.

This is the only module of ``grad`` that imports NumPy or CuPy. Everything else asks it for the
active *namespace* ``xp`` and writes its math with the Python array API standard
(``xp.sum(x, axis=1, keepdims=True)``, ``xp.matmul``, ``xp.concat``, ...), so the same code runs on

* ``"numpy"``            -- NumPy 2 on the CPU (the default);
* ``"cupy"``             -- CuPy >= 14.1 on an NVIDIA GPU;
* ``"array_api_strict"`` -- the reference implementation of the standard, with arrays placed on
  ``array_api_strict.Device("device1")``. It refuses anything outside the standard and any silent
  conversion to a host NumPy array, so a test run on it proves no NumPy-only call slipped in.

Choose with ``grad.backend.use("cupy")`` (also a context manager), or the environment variable
``GRAD_BACKEND`` before the first import.

The few needs the standard does not cover live here as small functions with tests of their own:
``scatter_add`` (the gradient of a gather), ``erf`` (for GELU), two in-place helpers for large
temporaries (``exp_``, ``add_at_columns``), ``contiguous`` (a row-major copy of a weight),
host-side seeded random numbers (``Generator``) moved to the device, ``to_numpy`` (device ->
host copy), and ``tune_host_allocator`` (keep freed host memory for reuse; used by the
training commands).
"""
from __future__ import annotations

import math
import os

import numpy as np

BACKENDS = ("numpy", "cupy", "array_api_strict")

xp = np              # the active array namespace (read it as ``backend.xp``, not by ``from ... import``)
_name = "numpy"
_device = None       # the device new arrays are placed on (``None``: the namespace's default)


class BackendError(RuntimeError):
    """A backend was asked for that cannot run here; the message says why and how to fix it."""


def _load(name: str):
    """Import the namespace for ``name`` and return ``(namespace, device)``."""
    if name == "numpy":
        return np, None
    if name == "array_api_strict":
        try:
            import array_api_strict
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise BackendError(
                "backend 'array_api_strict' needs the package array-api-strict: "
                "pip install 'minis2s[test]'") from exc
        return array_api_strict, array_api_strict.Device("device1")
    if name == "cupy":
        try:
            import cupy
        except ImportError as exc:
            raise BackendError(
                "backend 'cupy': CuPy is not installed. Install it for your CUDA version: "
                "pip install 'minis2s[gpu]' (CUDA 12, cupy-cuda12x) or pip install cupy-cuda13x "
                "(CUDA 13); or use the 'numpy' backend") from exc
        if not cupy.is_available():
            raise BackendError(
                "backend 'cupy': CuPy is installed but no usable CUDA device was found "
                "(cupy.is_available() is False). Check that this machine has an NVIDIA GPU and "
                "driver (nvidia-smi), or use the 'numpy' backend")
        return cupy, None
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


class use:
    """Switch the active backend: ``use("cupy")`` or, restoring the old one afterwards,
    ``with use("array_api_strict"): ...``.

    Tensors keep the arrays they were made with; switch backends before building a model (or move
    it with ``module.to("cupy")``).
    """

    def __init__(self, name: str):
        global xp, _name, _device
        self._previous = (xp, _name, _device)
        xp, _device = _load(name)
        _name = name

    def __enter__(self):
        return xp

    def __exit__(self, *exc_info):
        global xp, _name, _device
        xp, _name, _device = self._previous
        return False


def get_xp():
    """The active array namespace."""
    return xp


def name() -> str:
    """The active backend's name: ``"numpy"``, ``"cupy"`` or ``"array_api_strict"``."""
    return _name


def gpu_available() -> bool:
    """True when CuPy imports and sees a usable CUDA device."""
    try:
        _load("cupy")
    except BackendError:
        return False
    return True


# ----------------------------------------------------------------------------------- dtypes
def get_dtype(spec):
    """The active namespace's dtype for ``spec``: a name (``"float32"``) or a dtype object."""
    if isinstance(spec, str):
        if spec not in ("float32", "float64", "int64", "int32", "bool"):
            raise ValueError(f"unsupported dtype {spec!r}")
        return getattr(xp, spec)
    return spec


def dtype_name(dt) -> str:
    """The portable name of a dtype object (``"float32"``, ``"int64"``, ...)."""
    for n in ("float32", "float64", "int64", "int32", "bool", "int8", "uint8", "int16"):
        if dt == getattr(xp, n):
            return n
    return str(dt)


def is_floating(dt) -> bool:
    return xp.isdtype(dt, "real floating")


# ----------------------------------------------------------------------------- host <-> device
def is_array(obj) -> bool:
    """Whether ``obj`` is an array of the active namespace."""
    if _name == "numpy":
        return isinstance(obj, np.ndarray)
    return hasattr(obj, "__array_namespace__") and obj.__array_namespace__() is xp


def asarray(obj, dtype=None):
    """Put Python data, a host NumPy array or an array of the active namespace onto the device.

    Python floats become float32 and Python ints int64 unless ``dtype`` says otherwise (PyTorch's
    rule); NumPy arrays keep their dtype.
    """
    if is_array(obj):
        return obj if dtype is None else xp.astype(obj, get_dtype(dtype))
    host = np.asarray(obj)
    if dtype is not None:
        host = host.astype(dtype_name(dtype))
    elif host.dtype == np.float64 and not isinstance(obj, (np.ndarray, np.generic)):
        host = host.astype(np.float32)          # Python floats (and lists of them) -> float32
    return from_numpy(host)


def from_numpy(host: np.ndarray):
    """Copy a host NumPy array to the active backend's device, keeping its dtype."""
    if _name == "numpy":
        return host
    if _name == "cupy":
        return xp.asarray(host)
    return xp.asarray(host, device=_device)


def to_numpy(a) -> np.ndarray:
    """A host NumPy copy of an array of any backend (NumPy arrays are returned as they are)."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    ns = a.__array_namespace__()
    if hasattr(ns, "Device") and hasattr(a, "to_device"):   # array_api_strict
        a = a.to_device(ns.Device("CPU_DEVICE"))
    return np.asarray(a)


def zeros(shape, like):
    """Zeros of ``shape`` with the dtype and device of the array ``like``."""
    ns = like.__array_namespace__() if _name != "numpy" else np
    if _name == "array_api_strict":
        return ns.zeros(shape, dtype=like.dtype, device=like.device)
    return ns.zeros(shape, dtype=like.dtype)


def full(shape, value, like, dtype=None):
    """An array of ``shape`` filled with ``value``, on the device of ``like``."""
    dt = like.dtype if dtype is None else dtype
    if _name == "array_api_strict":
        return xp.full(shape, value, dtype=dt, device=like.device)
    return xp.full(shape, value, dtype=dt)


def arange(n, like, dtype=None):
    """``[0, 1, ..., n-1]`` as int64 (or ``dtype``) on the device of ``like``."""
    dt = xp.int64 if dtype is None else dtype
    if _name == "array_api_strict":
        return xp.arange(n, dtype=dt, device=like.device)
    return xp.arange(n, dtype=dt)


def new(shape, value, dtype):
    """A fresh array of ``shape`` filled with ``value`` on the active device."""
    dt = get_dtype(dtype)
    if _name == "array_api_strict":
        return xp.full(shape, value, dtype=dt, device=_device)
    return xp.full(shape, value, dtype=dt)


def new_arange(start, stop=None, step=1, dtype="int64"):
    dt = get_dtype(dtype)
    if stop is None:
        start, stop = 0, start
    if _name == "array_api_strict":
        return xp.arange(start, stop, step, dtype=dt, device=_device)
    return xp.arange(start, stop, step, dtype=dt)


# ---------------------------------------------------------------------------- scatter-add
def scatter_add(index, values, n_rows: int, skip: int | None = None):
    """Rows of ``values`` summed into ``n_rows`` slots: ``out[index[i]] += values[i]``.

    ``index``: 1-D integer array ``(N,)``; ``values``: ``(N, ...)``; returns ``(n_rows, ...)``.
    Repeated indices accumulate (this is the backward of ``take``/embedding lookup). ``skip``
    (a slot in ``[0, n_rows)``, or None): that slot gets nothing, it stays zero (the padding row
    of an embedding); its rows are left out before any arithmetic.
    """
    out = zeros((n_rows,) + tuple(values.shape[1:]), like=values)
    if skip is not None and _name in ("numpy", "cupy"):
        keep = index != skip
        index, values = index[keep], values[keep]
    if _name == "numpy" and math.prod(values.shape[1:]) >= SCATTER_ROUND_WIDTH:
        return _scatter_add_in_rounds(out, index, values)          # wide rows: an embedding
    first = np.unique(index, return_index=True)[1] if _name == "numpy" else None  # (U,)
    if first is not None and 2 * first.shape[0] > index.shape[0]:
        # ``np.add.at`` is an unbuffered loop, row by row. When most indices are distinct (a
        # large vocabulary), the first occurrence of each is simply copied into its (zero) row
        # by one fancy assignment, and only the repeats go through ``add.at``, in their original
        # order: every sum is formed in the same order as ``add.at`` alone forms it (the same
        # bits). With few distinct indices, the gathers would cost more than they save.
        out[index[first]] = values[first]
        repeat = np.ones(index.shape[0], dtype=bool)
        repeat[first] = False
        if repeat.any():
            np.add.at(out, index[repeat], values[repeat])
        return out
    if _name in ("numpy", "cupy"):
        xp.add.at(out, index, values)       # not the removed ``cupy.scatter_add``
        return out
    # Portable fallback (array_api_strict): a one-hot matrix times the values.
    onehot = index[None, :] == arange(n_rows, like=values)[:, None]           # (n_rows, N)
    flat = xp.reshape(values, (values.shape[0], -1))                            # (N, D)
    summed = xp.matmul(xp.astype(onehot, values.dtype), flat)                  # (n_rows, D)
    if skip is not None:
        summed[skip, ...] = 0.0
    return xp.reshape(summed, out.shape)


SCATTER_ROUND_MIN = 16       # a round of ``_scatter_add_in_rounds`` needs this many rows
SCATTER_ROUND_WIDTH = 32     # ... and rows of at least this many numbers (narrower: add.at)


def _scatter_add_in_rounds(out, index, values):
    """NumPy's ``scatter_add``, with the sums ``np.add.at`` forms, bit for bit, at a fraction of
    its cost. ``np.add.at`` is an unbuffered loop, one index (one row of ``values``) at a
    time. Here each row gets its *rank*: 0 for the first occurrence of its index, 1 for the
    second, ... Rows of one rank have distinct indices, so a whole rank is ONE fancy-indexed
    assignment (rank 0, into the zero rows) or addition (``out[idx] += rows``), and each slot
    receives its rows in their original order, as from ``add.at``: ``((v_0 + v_1) + v_2) ...``.
    Ranks reached by fewer than ``SCATTER_ROUND_MIN`` rows (the tail of a few frequent indices)
    go through ``np.add.at`` after the rounds, still in their original order.

    Used for rows of at least ``SCATTER_ROUND_WIDTH`` numbers (an embedding's gradient), where
    ``add.at`` pays a few microseconds per row; on narrower rows it is as fast as a round."""
    n = index.shape[0]
    if n == 0:
        return out
    order = np.argsort(index, kind="stable")                   # grouped by index, order kept
    grouped = index[order]
    starts = np.flatnonzero(np.concatenate([[True], grouped[1:] != grouped[:-1]]))  # (U,)
    lengths = np.diff(np.concatenate([starts, [n]]))           # occurrences of each index
    # the rows of rank r sit at starts + r (in the grouped order) of the indices occurring more
    # than r times; fewer indices reach each next rank, so the rounds stop at the first rank
    # that fewer than SCATTER_ROUND_MIN rows reach (after rank 0, always done: plain copies)
    live, live_lengths, r = starts, lengths, 0
    while r == 0 or live.shape[0] >= SCATTER_ROUND_MIN:
        rows = order[live + r]
        if r == 0:
            out[index[rows]] = values[rows]                     # first occurrences: zero + v
        else:
            out[index[rows]] += values[rows]                    # distinct slots: no repeats
        r += 1
        more = live_lengths > r
        live, live_lengths = live[more], live_lengths[more]
    if live.shape[0]:                    # the tail: each remaining index's rows, in their order
        tail_lengths = live_lengths - r                         # (L,) rows left per index
        first = np.repeat(live + r - np.cumsum(np.concatenate([[0], tail_lengths[:-1]])),
                          tail_lengths)
        rest = order[first + np.arange(first.shape[0])]
        np.add.at(out, index[rest], values[rest])
    return out


# ----------------------------------------------------------------------------- erf
# The error function is not in the array API standard (nor in NumPy). GELU needs it to float64
# accuracy to equal PyTorch's, so ``erf`` is evaluated here from two Chebyshev expansions whose
# coefficients are computed once, at import, from the C library's erf/erfc (Python's ``math``):
#
#   |z| <= 2:      erf(z) = z h(z^2),  h(u) = erf(sqrt(u)) / sqrt(u) on u in [0, 4]   (20 terms)
#   2 < |z| <= 6:  erf(z) = sign(z) (1 - exp(-z^2) erfcx(|z|)),
#                  erfcx(z) = exp(z^2) erfc(z), smooth and slowly varying on [2, 6]    (24 terms)
#   |z| > 6:       erf(z) = sign(z)                       (erfc(6) = 2e-17 is below float64's eps)
#
# Both expansions are exact to about 1e-15 (tested against ``math.erf``).
def _chebyshev_coefficients(f, n: int) -> list:
    """Coefficients c_k of f(t) ~ c_0 / 2 + sum_k c_k T_k(t) on [-1, 1], from n Chebyshev nodes."""
    import math
    nodes = [(j + 0.5) * math.pi / n for j in range(n)]
    values = [f(math.cos(a)) for a in nodes]
    return [2.0 / n * sum(v * math.cos(k * a) for v, a in zip(values, nodes)) for k in range(n)]


def _erf_tables():
    import math
    def h(t):                              # u = z^2 = 2 (t + 1) in [0, 4]
        z = math.sqrt(2.0 * (t + 1.0))
        return math.erf(z) / z

    def erfcx(t):                          # z = 4 + 2 t in [2, 6]
        z = 4.0 + 2.0 * t
        return math.exp(z * z) * math.erfc(z)
    return _chebyshev_coefficients(h, 20), _chebyshev_coefficients(erfcx, 24)


_ERF_SMALL, _ERF_LARGE = _erf_tables()


def _clenshaw(coefficients, t):
    """sum_k c_k T_k(t) (with c_0 halved) by Clenshaw's recurrence, elementwise on the array t."""
    b1 = b2 = 0.0
    for c in coefficients[:0:-1]:
        b1, b2 = 2.0 * t * b1 - b2 + c, b1
    return t * b1 - b2 + 0.5 * coefficients[0]


def erf(z):
    """The error function ``2/sqrt(pi) * integral_0^z exp(-t^2) dt``, elementwise, on any backend
    (accurate to about 1e-15 in float64; the dtype of ``z`` is kept)."""
    a = xp.abs(z)
    small = a * _clenshaw(_ERF_SMALL, xp.minimum(a * a, full((), 4.0, like=z)) * 0.5 - 1.0)
    clipped = xp.minimum(xp.maximum(a, full((), 2.0, like=z)), full((), 6.0, like=z))  # [2, 6]
    large = 1.0 - xp.exp(-clipped * clipped) * _clenshaw(_ERF_LARGE, (clipped - 4.0) * 0.5)
    magnitude = xp.where(a <= 2.0, small, xp.where(a <= 6.0, large, full((), 1.0, like=z)))
    return xp.where(z < 0.0, -magnitude, magnitude)


# ----------------------------------------------------------------------------- row dot products
def row_dot(a, b):
    """``sum(a * b, axis=-1)``, the dot product of each row of ``a`` with the row of ``b`` it
    broadcasts against (``b`` may be one vector ``(N,)``), without the product array: the
    standard's ``vecdot`` on NumPy (one short BLAS dot per row, never a threaded call: many
    small threaded calls stall when another process holds a core) and array_api_strict; the
    plain sum on CuPy."""
    if _name == "cupy":
        return xp.sum(a * b, axis=-1)
    return xp.vecdot(a, b)


def sum_rows(a):
    """The sum of the rows of a 2-D array ``a`` ``(M, N)`` -> ``(N,)``, as ``sum(a, axis=0)``:
    the gradient of a bias added to every row. On NumPy and array_api_strict it is the product
    ``ones(M) @ a``, one matrix-vector product in the BLAS: a reduction over the first axis walks
    ``a`` row by row in NumPy's generic loop, 3-4x slower at the sizes of a training step
    ((1920, 256) to (1920, 8000), float32, measured 2026-12-03). Both add the same numbers in a
    different order, so the last bits may differ. CuPy keeps its own reduction."""
    if _name == "cupy":
        return xp.sum(a, axis=0)
    if _name == "array_api_strict":
        ones = xp.ones((a.shape[0],), dtype=a.dtype, device=a.device)
    else:
        ones = xp.ones((a.shape[0],), dtype=a.dtype)
    return xp.matmul(ones, a)                                          # (N,)


# ----------------------------------------------------------------------------- in-place helpers
# A large temporary is not free: a fresh multi-megabyte array is new memory from the OS, and
# every page of it faults on first touch. These two helpers let the softmax cross-entropy, whose
# (N, V) arrays are the largest of a training step, work in buffers it already owns.
def exp_(a):
    """``exp(a)`` computed into ``a`` itself where the library can (NumPy, CuPy); a new array
    on array_api_strict (the standard has no ``out=``). Use the returned array."""
    if _name in ("numpy", "cupy"):
        return xp.exp(a, out=a)
    return xp.exp(a)


def empty(shape, like):
    """An uninitialised array of ``shape`` with the dtype and device of ``like``: a buffer that
    will be written in full before it is read (the LSTM layer's per-step buffers)."""
    if _name == "array_api_strict":
        return xp.empty(shape, dtype=like.dtype, device=like.device)
    return xp.empty(shape, dtype=like.dtype)


def into(out, fn, *args):
    """``fn(*args)`` written into ``out`` (an array, or a view of one) and ``out`` returned.
    ``fn`` is a function of the namespace (``xp.matmul``, ``xp.tanh``, ``xp.multiply``, ...).
    NumPy and CuPy write the result straight into ``out`` (``out=``: no temporary);
    array_api_strict has no ``out=``, so the result is made and copied in (``out[...] = ...``,
    which writes through a view into the array it views there, as in NumPy). The values are the
    same either way."""
    if _name in ("numpy", "cupy"):
        return fn(*args, out=out)
    out[...] = fn(*args)
    return out


def add_at_columns(a, cols, values):
    """``a[n, cols[n]] += values[n]`` for every row ``n`` of the 2-D array ``a``, in place where
    the library can (one element per row, so no index repeats). ``cols``: ``(N,)`` integers;
    ``values``: ``(N,)``. Returns the result (``a`` itself on NumPy and CuPy)."""
    if _name in ("numpy", "cupy"):
        a[xp.arange(a.shape[0]), cols] += values
        return a
    onehot = cols[:, None] == arange(a.shape[1], like=cols, dtype=cols.dtype)[None, :]   # (N, C)
    return a + xp.astype(onehot, a.dtype) * values[:, None]


def smallest_k(key, k: int):
    """The indices of the ``k`` smallest entries of every row of ``key`` (along the last axis),
    in the order a stable ascending sort puts them (equal keys: the lower index first), i.e.
    ``argsort(key, stable=True)[..., :k]``. On NumPy, when ``k`` is at most half the row and
    no key is NaN, without sorting whole rows: a partition finds the ``k``-th smallest value
    ``v``, each row keeps every key below ``v`` and the first keys equal to it (as many as are
    missing), and only those ``k`` are sorted. Otherwise (always on CuPy and array_api_strict)
    the whole rows are sorted."""
    n = key.shape[-1]
    if _name != "numpy" or not 0 < 2 * k <= n or \
            (is_floating(key.dtype) and bool(xp.isnan(key).any())):
        order = xp.argsort(key, axis=-1, stable=True)
        return order[..., :k]
    v = xp.partition(key, k - 1, axis=-1)[..., k - 1:k]                 # (..., 1) k-th smallest
    below = key < v
    equal = key == v
    missing = k - xp.sum(below, axis=-1, keepdims=True)                 # (..., 1) >= 1
    if bool(xp.any(xp.sum(equal, axis=-1, keepdims=True) > missing)):  # more ties than places
        equal &= xp.cumsum(equal, axis=-1) <= missing                   # the first ones
    keep = below | equal                                                # exactly k per row
    idx = xp.reshape(xp.nonzero(keep)[-1], key.shape[:-1] + (k,))       # ascending per row
    order = xp.argsort(xp.take_along_axis(key, idx, axis=-1), axis=-1, stable=True)
    return xp.take_along_axis(idx, order, axis=-1)


def contiguous(a):
    """``a`` laid out row-major (C order): a copy when it is not already, e.g. a transposed
    view (NumPy, CuPy); ``a`` itself on array_api_strict, whose arrays have no layout. Used to
    store a weight once as the ``(in, out)`` matrix a plain product reads fastest."""
    if _name in ("numpy", "cupy"):
        return xp.ascontiguousarray(a)
    return a


# ----------------------------------------------------------------------------- host allocator
_allocator_tuned = False


def tune_host_allocator() -> bool:
    """Ask the C library's allocator (glibc's malloc, on Linux) to keep freed memory for reuse
    instead of handing it back to the operating system after every large array.

    A training step allocates and frees hundreds of megabytes of temporaries; by default each
    large block is a fresh ``mmap`` whose every page faults and is zeroed on first touch, again
    at every step. Raising ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` keeps those blocks in
    the heap, the host-side counterpart of CuPy's memory pool (docs/performance.md measures
    what it buys). It changes the whole process, so ``grad`` never calls it on its own: the
    ``minis2s`` training commands do. Returns whether the setting was applied (False where the
    C library is not glibc).
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3              # glibc's mallopt parameters
        ok = libc.mallopt(m_mmap_threshold, 256 << 20) == 1      # blocks up to 256 MiB: heap
        ok = ok and libc.mallopt(m_trim_threshold, 1 << 30) == 1  # keep up to 1 GiB free
    except (OSError, AttributeError):
        return False
    _allocator_tuned = bool(ok)
    return _allocator_tuned


# ----------------------------------------------------------------------------- BLAS threads
def _threadpoolctl():
    try:
        import threadpoolctl
    except ImportError:
        raise BackendError("setting BLAS threads needs the threadpoolctl package "
                           "(pip install threadpoolctl; minis2s installs it)") from None
    return threadpoolctl


def set_num_threads(n: int) -> None:
    """Run the host BLAS (NumPy's OpenBLAS or MKL) with ``n`` threads from now on, for the whole
    process, through threadpoolctl -- the library's own call, which works after NumPy has
    loaded (environment variables such as ``OPENBLAS_NUM_THREADS`` are read only at load time)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of BLAS threads must be a positive integer, got {n!r}")
    _threadpoolctl().threadpool_limits(limits=n, user_api="blas")


def get_num_threads() -> int | None:
    """The thread count the host BLAS reports now (None when no BLAS library is found)."""
    counts = [i["num_threads"] for i in blas_info()]
    return max(counts) if counts else None


def blas_info() -> list[dict]:
    """What threadpoolctl sees of the loaded BLAS libraries: name, kernel (``architecture``),
    version and thread count, one dict per library."""
    keys = ("internal_api", "version", "architecture", "num_threads")
    return [{k: i.get(k) for k in keys} for i in _threadpoolctl().threadpool_info()
            if i.get("user_api") == "blas"]


# ----------------------------------------------------------------------------- random numbers
class Generator:
    """A seeded source of random numbers, drawn on the host with NumPy's PCG64 and moved to the
    active device.

    Drawing on the host makes every backend produce the same numbers for the same seed, and the
    state is a small JSON-able dict (``state_dict()``) that a checkpoint can save and restore.
    """

    def __init__(self, seed: int | None = 0):
        self.manual_seed(seed)

    def manual_seed(self, seed: int | None):
        self._rng = np.random.Generator(np.random.PCG64(seed))
        return self

    def state_dict(self) -> dict:
        return self._rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    # Host draws (NumPy arrays), for data shuffling and the like.
    def host_permutation(self, n: int) -> np.ndarray:
        return self._rng.permutation(n)

    def host_random(self, size=None) -> np.ndarray:
        return self._rng.random(size)

    def host_integers(self, low, high, size=None):
        return self._rng.integers(low, high, size)

    # Device draws.
    def normal(self, shape, mean=0.0, std=1.0, dtype="float32"):
        host = self._rng.normal(mean, std, size=tuple(shape)).astype(dtype_name(dtype))
        return from_numpy(host)

    def uniform(self, shape, low=0.0, high=1.0, dtype="float32"):
        host = self._rng.uniform(low, high, size=tuple(shape)).astype(dtype_name(dtype))
        return from_numpy(host)

    def bernoulli(self, shape, p: float, dtype="float32"):
        """1 with probability ``p``, else 0, as ``dtype``."""
        host = (self._rng.random(tuple(shape)) < p).astype(dtype_name(dtype))
        return from_numpy(host)

    def integers(self, low, high, shape, dtype="int64"):
        host = self._rng.integers(low, high, size=tuple(shape)).astype(dtype_name(dtype))
        return from_numpy(host)


default_generator = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Reseed the global generator (used where no explicit ``generator=`` is given)."""
    return default_generator.manual_seed(seed)


if os.environ.get("GRAD_BACKEND"):
    use(os.environ["GRAD_BACKEND"])
