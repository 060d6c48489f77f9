"""What every checker shares: loading the student's file, calling its functions, comparing arrays
coordinate by coordinate, and checking a hand-written backward (against the library's autograd
and with ``grad.gradcheck``).

A check stops at the first thing that is wrong and raises ``CheckFailed`` with what is wrong,
where (the first bad coordinate in row-major order, or the test case), the expected and the
computed value, and a hint. Checks that pass add a line to the ``Report``.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import traceback
from pathlib import Path

import numpy as np


class StudentFileError(Exception):
    """The student's file is missing or cannot be imported (the command exits with 2)."""


class CheckFailed(Exception):
    """A check failed. ``where`` is the first bad coordinate (``[1, 2]``) or the case;
    ``expected`` and ``got`` the values there."""

    def __init__(self, what: str, hint: str = "", where: str | None = None, expected=None,
                 got=None):
        super().__init__(what)
        self.what, self.hint, self.where = what, hint, where
        self.expected, self.got = expected, got

    def lines(self) -> list[str]:
        out = [self.what]
        if self.where is not None:
            out.append(f"first wrong coordinate: {self.where}")
        if self.expected is not None or self.got is not None:
            out.append(f"expected {_fmt(self.expected)}, got {_fmt(self.got)}")
        if self.hint:
            out.append(f"hint: {self.hint}")
        return out


class Report:
    """The lines of the checks that passed."""

    def __init__(self):
        self.passed: list[str] = []

    def ok(self, line: str) -> None:
        self.passed.append(line)


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.8g}"
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _fmt(value[()])
    return repr(value) if isinstance(value, str) else str(value)


# ----------------------------------------------------------------------------- the student file
def load_student(path) -> object:
    """Import the student's file as a fresh module (a new import each time, so an edited file is
    read again). Missing or unimportable: ``StudentFileError`` with one line naming the file and,
    for an error in it, the line."""
    path = Path(path)
    if not path.is_file():
        raise StudentFileError(f"{path} not found")
    name = f"minis2s_student_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    added = str(path.resolve().parent)
    sys.path.insert(0, added)               # the file may import a helper next to it
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise StudentFileError(f"{path}:{exc.lineno}: cannot import it: SyntaxError: {exc.msg}") from None
    except BaseException as exc:            # noqa: B902 - anything the file does at import time
        if isinstance(exc, KeyboardInterrupt):
            raise
        line = _student_line(exc, path)
        raise StudentFileError(f"{path}{line}: cannot import it: {type(exc).__name__}: {exc}") from None
    finally:
        if added in sys.path:
            sys.path.remove(added)
    module.__student_path__ = path
    return module


def _student_line(exc: BaseException, path: Path) -> str:
    """``:LINE`` of the deepest frame of the traceback that is in the student's file."""
    line = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = f":{frame.lineno}"
    return line


def call(module, name: str, *args, **kwargs):
    """Call the student's function ``name``; a missing function, ``NotImplementedError`` or any
    other exception becomes a ``CheckFailed`` naming the function (and the line in the file)."""
    fn = getattr(module, name, None)
    if not callable(fn):
        raise CheckFailed(f"{name} is missing from the file", "keep the function names of the starter "
                          "file (minis2s exercise show N --force writes it again)")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(f"{name} is not written yet (it raises NotImplementedError)",
                          "replace the `raise NotImplementedError` with your code") from None
    except Exception as exc:                # noqa: BLE001 - the student's bug, reported
        path = getattr(module, "__student_path__", None)
        where = f" at {path.name}{_student_line(exc, path)}" if path else ""
        raise CheckFailed(f"{name} raised {type(exc).__name__}: {exc}{where}",
                          "read the shapes in the docstring; print the shapes of your arrays") from None


# ----------------------------------------------------------------------------- comparisons
def first_difference(got, expected, atol: float = 1e-6, rtol: float = 1e-5):
    """The first (row-major) index where ``got`` and ``expected`` differ beyond the tolerance,
    NaN against a number and infinities of different sign included; None when they agree.
    Arrays must have the same shape."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)
    bad = np.argwhere(~close)
    return None if len(bad) == 0 else tuple(int(i) for i in bad[0])


def expect_close(label: str, got, expected, hint: str, atol: float = 1e-6, rtol: float = 1e-5,
                 case: str | None = None) -> None:
    """Compare an array (or number) the student computed with the library's; raise
    ``CheckFailed`` at the first coordinate that differs (or on a wrong shape or type)."""
    prefix = f"{label}" + (f" ({case})" if case else "")
    try:
        got_arr = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise CheckFailed(f"{prefix}: returned {type(got).__name__}, not numbers", hint) from None
    exp_arr = np.asarray(expected, dtype=np.float64)
    if got_arr.shape != exp_arr.shape:
        raise CheckFailed(f"{prefix}: wrong shape", hint, expected=f"shape {exp_arr.shape}",
                          got=f"shape {got_arr.shape}")
    index = first_difference(got_arr, exp_arr, atol, rtol)
    if index is not None:
        where = f"{list(index)} of shape {exp_arr.shape}" if exp_arr.ndim else "the value"
        raise CheckFailed(f"{prefix}: wrong value", hint, where=where,
                          expected=exp_arr[index], got=got_arr[index])


def expect_equal(label: str, got, expected, hint: str, case: str | None = None) -> None:
    """Exact comparison of integer arrays (token ids) or plain Python values."""
    prefix = f"{label}" + (f" ({case})" if case else "")
    if isinstance(expected, np.ndarray):
        try:
            got_arr = np.asarray(got)
        except (TypeError, ValueError):
            raise CheckFailed(f"{prefix}: returned {type(got).__name__}, not an array", hint) from None
        if got_arr.shape != expected.shape:
            raise CheckFailed(f"{prefix}: wrong shape", hint, expected=f"shape {expected.shape}",
                              got=f"shape {got_arr.shape}")
        bad = np.argwhere(got_arr != expected)
        if len(bad):
            index = tuple(int(i) for i in bad[0])
            raise CheckFailed(f"{prefix}: wrong value", hint,
                              where=f"{list(index)} of shape {expected.shape}",
                              expected=expected[index].item(), got=got_arr[index].item())
        return
    if got != expected:
        raise CheckFailed(f"{prefix}: wrong value", hint, where="the value", expected=expected, got=got)


def expect_cases(label: str, got_values, expected_values, cases, hint: str, atol=1e-9, rtol=1e-7):
    """Scalars over several cases: the first case whose value differs is the coordinate."""
    for i, (g, e, case) in enumerate(zip(got_values, expected_values, cases)):
        try:
            g = float(g)
        except (TypeError, ValueError):
            raise CheckFailed(f"{label} ({case}): returned {type(g).__name__}, not a number", hint) from None
        if not (math.isclose(g, e, rel_tol=rtol, abs_tol=atol) or (math.isnan(g) and math.isnan(e))
                or (g == e)):
            raise CheckFailed(f"{label}: wrong value", hint,
                              where=f"case {i} of {len(cases)}: {case}", expected=e, got=g)


# ----------------------------------------------------------------------------- gradients
def library_vjp(fn, arrays, cotangents):
    """Gradients of ``sum_k sum(out_k * v_k)`` with respect to ``arrays`` (NumPy float64), by the
    library's autograd: ``fn`` takes and returns ``grad.Tensor``s."""
    import grad
    with grad.backend.use("numpy"):
        leaves = [grad.tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
        outs = fn(*leaves)
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        total = None
        for o, v in zip(outs, cotangents):
            term = (o * grad.tensor(np.asarray(v, dtype=np.float64))).sum()
            total = term if total is None else total + term
        total.backward()
        return [np.zeros(a.shape) if t.grad is None else grad.backend.to_numpy(t.grad) for a, t in
                zip(arrays, leaves)]


def gradcheck_student(label: str, forward, backward, arrays, hint: str) -> None:
    """Wrap the student's ``forward(*arrays) -> out`` and ``backward(*arrays, g) -> grads`` (NumPy)
    into one ``grad`` node and run ``grad.gradcheck`` on it: the backward must agree with central
    finite differences of the forward, over the whole Jacobian for small inputs."""
    import grad
    from grad.tensor import make

    def node(*tensors):
        xs = [t.data for t in tensors]
        out = np.asarray(forward(*xs), dtype=np.float64)

        def bwd(g):
            grads = backward(*xs, g)
            grads = grads if isinstance(grads, (tuple, list)) else (grads,)
            return tuple(np.asarray(gr, dtype=np.float64) for gr in grads)
        return make(out, tuple(tensors), bwd, label)

    with grad.backend.use("numpy"):
        leaves = [grad.tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
        try:
            grad.gradcheck(node, leaves, full_jacobian_max=40)
        except grad.GradcheckError as exc:
            worst = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise CheckFailed(f"{label}: gradcheck failed (the backward disagrees with finite "
                              f"differences of the forward)", hint, where=worst) from None
        except CheckFailed:
            raise
        except Exception as exc:            # noqa: BLE001 - the student's code raised inside
            raise CheckFailed(f"{label}: raised {type(exc).__name__} under gradcheck: {exc}", hint) from None


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
