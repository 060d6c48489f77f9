"""Gradient checking: compare autograd's gradients with central finite differences.

The checked scalar is ``L = sum_k sum(out_k * v_k)`` with a random cotangent ``v`` (never a plain
``sum``: an all-ones cotangent hides bugs such as a softmax backward without its cross term).

* Tiny inputs (at most ``full_jacobian_max`` elements in all, with at most that many outputs):
  the full Jacobian, column by column from finite differences and row by row from backward
  passes with one-hot cotangents.
* Larger inputs: every coordinate of ``dL/dx`` when there are at most ``max_coordinates`` of
  them, otherwise a random sample of coordinates; and always one random direction ``d`` across
  all inputs at once (Chainer's trick: ``dL/dx . d`` against ``(L(x + eps d) - L(x - eps d)) / 2 eps``,
  two evaluations for any input size).

Run in float64 (central differences with ``eps = 1e-6`` in float32 fail even for ``tanh``).
"""
from __future__ import annotations

import math

from . import backend as B
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree; the message names the worst coordinates (n-d,
    e.g. ``input 0 [2, 3]``) and their relative errors."""


def _outputs(fn, inputs):
    out = fn(*inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _flat(a):
    return B.xp.reshape(a, (-1,))


def _coords(i: int, shape) -> list:
    """The n-d coordinates of flat (row-major) index ``i`` in an array of ``shape``."""
    out = []
    for n in reversed(tuple(shape)):
        i, r = divmod(i, n)
        out.append(r)
    return out[::-1]


def _set_flat(t: Tensor, flat) -> None:
    t.data = B.xp.reshape(flat, t.data.shape)


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, *,
              params=(), full_jacobian_max: int = 64, max_coordinates: int = 256, seed: int = 0,
              raise_exception: bool = True) -> bool:
    """Check the gradients of ``fn(*inputs)`` with respect to every floating input that requires
    grad and every tensor in ``params`` (e.g. ``module.parameters()``).

    ``fn`` returns a tensor or a tuple of tensors and must be deterministic. Returns True, or
    raises ``GradcheckError`` with the worst coordinates and their relative error.
    """
    xp = B.xp
    inputs = list(inputs)
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad] + list(params)
    if not checked:
        raise ValueError("gradcheck: no input or parameter requires grad")
    for t in checked:
        if B.dtype_name(t.dtype) != "float64":
            raise TypeError(f"gradcheck needs float64 tensors (got {t.dtype}); "
                            "float32 finite differences are too coarse")
    gen = B.Generator(seed)

    with no_grad():
        outs = _outputs(fn, inputs)
    cotangents = [gen.normal(o.shape, dtype="float64") for o in outs]

    def loss_value():
        with no_grad():
            return float(sum(xp.sum(o.data * v) for o, v in zip(_outputs(fn, inputs), cotangents)))

    def analytic(cots):
        for t in checked:
            t.grad = None
        total = None
        for o, v in zip(_outputs(fn, inputs), cots):
            if not o.requires_grad:
                continue
            term = (o * Tensor(v)).sum()
            total = term if total is None else total + term
        if total is not None:
            total.backward()
        return [t.grad if t.grad is not None else B.zeros(t.shape, like=t.data) for t in checked]

    failures = []

    def compare(label, a, n):
        err = abs(a - n)
        if not err <= atol + rtol * abs(n) or math.isnan(a):
            failures.append((err / max(abs(n), 1e-12), label, a, n))

    def numeric_coordinate(t, i):
        flat = _flat(t.data)
        orig = float(flat[i])
        plus, minus = xp.asarray(flat, copy=True), xp.asarray(flat, copy=True)
        plus[i] = orig + eps
        minus[i] = orig - eps
        _set_flat(t, plus)
        f_plus = loss_value()
        _set_flat(t, minus)
        f_minus = loss_value()
        _set_flat(t, flat)
        return (f_plus - f_minus) / (2 * eps)

    n_in = sum(t.numel() for t in checked)
    n_out = sum(o.numel() for o in outs)
    if n_in <= full_jacobian_max and n_out <= full_jacobian_max:
        _full_jacobian(fn, inputs, checked, outs, eps, analytic, compare)
    else:
        grads = analytic(cotangents)
        for k, (t, g) in enumerate(zip(checked, grads)):
            if tuple(g.shape) != t.shape:
                failures.append((math.inf, f"input {k}: gradient shape {tuple(g.shape)} != {t.shape}", 0, 0))
                continue
            gflat = B.to_numpy(_flat(g))
            coords = range(t.numel())
            if t.numel() > max_coordinates:
                coords = sorted(set(int(c) for c in gen.host_integers(0, t.numel(), max_coordinates)))
            for i in coords:
                compare(f"input {k} {_coords(i, t.shape)} of shape {t.shape}", float(gflat[i]),
                        numeric_coordinate(t, i))
        # One random direction across all inputs at once.
        directions = [gen.normal(t.shape, dtype="float64") for t in checked]
        predicted = sum(float(xp.sum(g * d)) for g, d in zip(grads, directions))
        originals = [t.data for t in checked]
        for t, d in zip(checked, directions):
            t.data = t.data + eps * d
        f_plus = loss_value()
        for t, o, d in zip(checked, originals, directions):
            t.data = o - eps * d
        f_minus = loss_value()
        for t, o in zip(checked, originals):
            t.data = o
        compare("random direction", predicted, (f_plus - f_minus) / (2 * eps))
    for t in checked:
        t.grad = None

    if failures:
        failures.sort(key=lambda f: -f[0])
        lines = [f"  {label}: analytic {a:.8g}, numerical {n:.8g}, relative error {r:.3g}"
                 for r, label, a, n in failures[:5]]
        msg = (f"gradcheck failed at {len(failures)} coordinate(s) (atol={atol}, rtol={rtol}, "
               f"eps={eps}); worst:\n" + "\n".join(lines))
        if raise_exception:
            raise GradcheckError(msg)
        return False
    return True


def _full_jacobian(fn, inputs, checked, outs, eps, analytic, compare):
    """Every entry d out_j / d in_i: columns by finite differences, rows by backward passes."""
    xp = B.xp
    # Rows: one backward per output element with a one-hot cotangent.
    rows = []                                   # rows[j][k] = d out_j / d checked_k (flat)
    for oi, o in enumerate(outs):
        for j in range(o.numel()):
            cots = [B.zeros(x.shape, like=x.data) for x in outs]
            flat = _flat(cots[oi])
            flat[j] = 1.0
            cots[oi] = xp.reshape(flat, o.shape)
            grads = analytic(cots)
            rows.append([B.to_numpy(_flat(g)) if tuple(g.shape) == t.shape else None
                         for g, t in zip(grads, checked)])
    # Columns: perturb one input coordinate at a time.
    for k, t in enumerate(checked):
        base = _flat(t.data)
        for i in range(t.numel()):
            col = []
            for sign in (1.0, -1.0):
                pert = xp.asarray(base, copy=True)
                pert[i] = float(base[i]) + sign * eps
                _set_flat(t, pert)
                with no_grad():
                    col.append([B.to_numpy(_flat(o.data)) for o in _outputs(fn, inputs)])
            _set_flat(t, base)
            numeric = [(p - m) / (2 * eps) for p, m in zip(col[0], col[1])]
            j = 0
            for oi, o in enumerate(outs):
                for jj in range(o.numel()):
                    row = rows[j][k]
                    if row is None:
                        compare(f"input {k}: gradient has the wrong shape", math.inf, 0.0)
                    else:
                        compare(f"d output {oi} {_coords(jj, o.shape)} / d input {k} "
                                f"{_coords(i, t.shape)}", float(row[i]), float(numeric[oi][jj]))
                    j += 1
