"""Fused vs composed LSTM cell: forward + backward time of one step, a few sizes.

    python benchmarks/lstm_cell.py [--repeat 200]

The composed cell (``grad.functional.lstm_cell_reference``) is the readable reference written with
primitive ops; the fused cell (``grad.functional.lstm_cell``) is one node with a hand-written
backward. Both compute the same numbers (tests/test_lstm.py checks 1e-10 in float64).
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this repository
import grad  # noqa: E402
from grad import functional as F  # noqa: E402


def time_cell(cell, batch, n_in, n_hidden, repeat):
    gen = grad.Generator(0)
    x = grad.randn(batch, n_in, generator=gen, requires_grad=True)
    h = grad.randn(batch, n_hidden, generator=gen, requires_grad=True)
    c = grad.randn(batch, n_hidden, generator=gen, requires_grad=True)
    w_ih = grad.randn(4 * n_hidden, n_in, generator=gen, requires_grad=True)
    w_hh = grad.randn(4 * n_hidden, n_hidden, generator=gen, requires_grad=True)
    b_ih = grad.randn(4 * n_hidden, generator=gen, requires_grad=True)
    b_hh = grad.randn(4 * n_hidden, generator=gen, requires_grad=True)
    cot = grad.randn(batch, n_hidden, generator=gen)
    samples = []
    for i in range(repeat + 10):
        t0 = time.perf_counter()
        h2, c2 = cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
        ((h2 + c2) * cot).sum().backward()
        if i >= 10:
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def time_layer(fused, batch, n_in, n_hidden, steps, repeat):
    """A one-layer LSTM over ``steps`` time steps: ``grad.nn.LSTM`` (input projection for all
    steps in one GEMM, one fused node per step) vs a loop of composed cells."""
    gen = grad.Generator(0)
    lstm = grad.nn.LSTM(n_in, n_hidden, batch_first=True, generator=gen)
    x = grad.randn(batch, steps, n_in, generator=gen, requires_grad=True)
    cot = grad.randn(batch, steps, n_hidden, generator=gen)
    samples = []
    for i in range(repeat + 2):
        t0 = time.perf_counter()
        if fused:
            out, _ = lstm(x)
        else:
            h = c = grad.zeros(batch, n_hidden)
            outs = []
            for t in range(steps):
                h, c = F.lstm_cell_reference(x[:, t], h, c, lstm.weight_ih_l0, lstm.weight_hh_l0,
                                            lstm.bias_ih_l0, lstm.bias_hh_l0)
                outs.append(h)
            out = grad.stack(outs, dim=1)
        (out * cot).sum().backward()
        if i >= 2:
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    print(f"{'B':>4} {'in':>5} {'H':>5} {'composed (us)':>14} {'fused (us)':>11} {'speed-up':>9}")
    for batch, n_in, n_hidden in [(32, 32, 64), (64, 128, 256), (64, 256, 512)]:
        composed = time_cell(F.lstm_cell_reference, batch, n_in, n_hidden, args.repeat)
        fused = time_cell(F.lstm_cell, batch, n_in, n_hidden, args.repeat)
        print(f"{batch:>4} {n_in:>5} {n_hidden:>5} {composed * 1e6:>14.1f} {fused * 1e6:>11.1f} "
              f"{composed / fused:>8.2f}x")
    print()
    print(f"one layer over T steps, forward + backward")
    print(f"{'B':>4} {'T':>4} {'in':>5} {'H':>5} {'composed (ms)':>14} {'fused (ms)':>11} {'speed-up':>9}")
    for batch, steps, n_in, n_hidden in [(32, 12, 32, 64), (64, 30, 128, 256), (64, 40, 256, 512)]:
        repeat = max(3, args.repeat // 20)
        composed = time_layer(False, batch, n_in, n_hidden, steps, repeat)
        fused = time_layer(True, batch, n_in, n_hidden, steps, repeat)
        print(f"{batch:>4} {steps:>4} {n_in:>5} {n_hidden:>5} {composed * 1e3:>14.2f} "
              f"{fused * 1e3:>11.2f} {composed / fused:>8.2f}x")


if __name__ == "__main__":
    main()
