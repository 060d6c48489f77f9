"""The engine's overhead per graph node: forward + backward of tiny ops, against the bare array
calls that do the same arithmetic.

    python benchmarks/ops.py [--size 4] [--chain 200] [--repeat 30]

For each op a chain of ``--chain`` nodes is built on ``(size, size)`` float32 arrays (so the
arithmetic itself is negligible) and differentiated with ``backward()``; the same forward and
backward arithmetic is then done with plain array calls. The difference per node is what the
autograd engine costs: making the node, recording its parents, the backward sweep's heap and
the gradient bookkeeping.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py: median_seconds)
import grad  # noqa: E402
from grad import backend as B  # noqa: E402
from grad import functional as F  # noqa: E402
from grad import ops  # noqa: E402


def engine_chain(op, x0, w, chain):
    x = grad.tensor(x0, requires_grad=True)
    wt = grad.tensor(w, requires_grad=True)
    y = x
    for _ in range(chain):
        y = op(y, wt)
    y.backward(grad.ones(*y.shape))


# the same arithmetic as each op's forward and backward, as bare array calls
def bare_add(x, w, chain):
    xp = B.xp
    ys = [x]
    for _ in range(chain):
        ys.append(ys[-1] + w)
    g, gw = xp.ones_like(x), xp.zeros_like(w)
    for _ in range(chain):
        gw = gw + g                                  # both inputs get g
    return g, gw


def bare_mul(x, w, chain):
    xp = B.xp
    ys = [x]
    for _ in range(chain):
        ys.append(ys[-1] * w)
    g, gw = xp.ones_like(x), xp.zeros_like(w)
    for k in range(chain, 0, -1):
        gw = gw + g * ys[k - 1]
        g = g * w
    return g, gw


def bare_tanh(x, w, chain):
    xp = B.xp
    ys = [x]
    for _ in range(chain):
        ys.append(xp.tanh(ys[-1]))
    g = xp.ones_like(x)
    for k in range(chain, 0, -1):
        g = g * (1.0 - ys[k] * ys[k])
    return g, None


def bare_matmul(x, w, chain):
    xp = B.xp
    ys = [x]
    for _ in range(chain):
        ys.append(xp.matmul(ys[-1], w))
    g, gw = xp.ones_like(x), xp.zeros_like(w)
    for k in range(chain, 0, -1):
        gw = gw + xp.matmul(xp.matrix_transpose(ys[k - 1]), g)
        g = xp.matmul(g, xp.matrix_transpose(w))
    return g, gw


def bare_linear(x, w, chain):
    return bare_matmul(x, w, chain)                  # x W^T: the same products, transposed


OPS = {   # name: (engine op on (y, w), bare arithmetic)
    "add": (lambda y, w: y + w, bare_add),
    "mul": (lambda y, w: y * w, bare_mul),
    "tanh": (lambda y, w: ops.tanh(y), bare_tanh),
    "matmul": (lambda y, w: y @ w, bare_matmul),
    "linear": (lambda y, w: F.linear(y, w), bare_linear),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4, help="arrays are (size, size) (default 4)")
    parser.add_argument("--chain", type=int, default=200, help="nodes per graph (default 200)")
    parser.add_argument("--repeat", type=int, default=30, help="timed graphs per op (default 30)")
    args = parser.parse_args(argv)
    if min(args.size, args.chain, args.repeat) < 1:
        parser.error("--size, --chain and --repeat must be positive")
    gen = grad.Generator(0)
    x0 = 0.5 * grad.randn(args.size, args.size, generator=gen).data
    w = 0.5 * grad.randn(args.size, args.size, generator=gen).data
    print(f"backend {B.name()}, ({args.size}, {args.size}) float32, chains of {args.chain} nodes; "
          "microseconds per node, forward + backward")
    print(f"{'op':<8} {'engine':>9} {'bare':>9} {'overhead':>9} {'ratio':>7}")
    for name, (op, bare) in OPS.items():
        engine = common.median_seconds(lambda: engine_chain(op, x0, w, args.chain), args.repeat) / args.chain
        plain = common.median_seconds(lambda: bare(x0, w, args.chain), args.repeat) / args.chain
        print(f"{name:<8} {engine * 1e6:>9.2f} {plain * 1e6:>9.2f} {(engine - plain) * 1e6:>9.2f} "
              f"{engine / plain:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
