"""30 Adam steps of a small Seq2Seq in float64 through ``minis2s.trainer_core.Trainer`` and
``minis2s.train.train_step``: run as one
process (``python equality.py OUT``) or as N ranks (``mpiexec -n N python equality.py OUT``);
rank 0 saves the final parameters to OUT (a .npz) for tests/test_distributed.py to compare.

Global batches of 8 sentences, and every 5th of 1 sentence, so that with 2 ranks one rank's shard
is empty (zero tokens, zero gradient) and it still joins the collectives."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

import grad  # noqa: E402
from grad import backend as B  # noqa: E402
from minis2s import distributed  # noqa: E402
from minis2s.data.batching import collate  # noqa: E402
from minis2s.train import TrainConfig, build_model, train_step  # noqa: E402
from minis2s.trainer_core import Trainer  # noqa: E402

STEPS, BATCH = 30, 8


def main(out):
    comm = distributed.init()
    rng = np.random.default_rng(5)
    n = 200
    src = [list(rng.integers(4, 20, size=rng.integers(2, 9))) + [2] for _ in range(n)]
    tgt = [[1] + list(rng.integers(4, 20, size=rng.integers(1, 8))) + [2] for _ in range(n)]
    tgt = [t[1:] for t in tgt]                               # collate wants ids + [EOS]
    order = rng.permutation(n)
    batches, at = [], 0
    for step in range(STEPS):
        size = 1 if step % 5 == 4 else BATCH
        batches.append([int(i) for i in order[at:at + size]])
        at += size
    model = build_model(dict(src_vocab_size=20, tgt_vocab_size=20, emb_size=8, hidden_size=12,
                             num_layers=1, dropout=0.0), seed=0, dtype="float64")
    optimizer = grad.optim.Adam(model.parameters(), lr=0.01)
    initial = [B.to_numpy(p.data).copy() for p in model.parameters()]
    cfg = TrainConfig(dropout=0.0, max_grad_norm=1.0, dtype="float64")

    def step(idx, **kwargs):              # minis2s.train.train_step, as `minis2s train` runs it
        return train_step(model, optimizer, collate(src, tgt, idx), cfg, **kwargs)

    if comm is not None:                  # record the buffers the gradient Allreduce is given
        comm.mpi = _Recording(comm.mpi, lambda buf: optimizer.flat is not None
                              and buf is optimizer.flat.grad)
    trainer = Trainer(model, optimizer, step=step, batches=lambda epoch: batches,
                      validate=lambda: {"loss": 0.0}, describe=lambda r, i: "", epochs=1,
                      max_grad_norm=cfg.max_grad_norm, comm=comm, check_every=10,
                      log=lambda m: None)
    trainer.fit()
    if comm is None or comm.is_root:
        moved = max(float(np.abs(B.to_numpy(p.data) - w0).max())
                    for p, w0 in zip(model.parameters(), initial))
        np.savez(out, _moved=np.array(moved),
                 **{name: B.to_numpy(p.data) for name, p in model.named_parameters()})
        print(f"trained {trainer.engine.state.iteration} steps on "
              f"{1 if comm is None else comm.size} process(es)")
        if comm is not None:              # every gradient Allreduce: the flat buffer itself
            grads = [flat for size, flat in comm.mpi.calls if size > 8]
            in_place = len(grads) == STEPS and all(grads)
            print(f"in-place Allreduce over the flat gradient buffer: {in_place}")


class _Recording:
    """An MPI communicator that records, for each float ``Allreduce``, the buffer's size and
    whether it was (at the time of the call) the optimizer's flat gradient buffer itself."""

    def __init__(self, inner, is_flat):
        self.inner, self.is_flat, self.calls = inner, is_flat, []

    def Allreduce(self, sendbuf, recvbuf, op):
        if recvbuf.dtype.kind == "f":
            self.calls.append((recvbuf.size, self.is_flat(recvbuf)))
        return self.inner.Allreduce(sendbuf, recvbuf, op=op)

    def __getattr__(self, name):
        return getattr(self.inner, name)


if __name__ == "__main__":
    main(sys.argv[1])
