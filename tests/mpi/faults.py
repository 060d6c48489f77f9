"""Failures seen by one rank only, run as ``mpiexec -n 2 python faults.py MODE OUT``:

``nan``   rank 1's loss turns NaN at step 3 (Python, through the Trainer): every rank must stop
          at that step with the same message;
``data``  rank 1 fails alone while reading its data (``minis2s train`` through ``cli.main``):
          the job must end (MPI_Abort) with that rank's message and exit code, not hang;
``bug``   the same with an unexpected exception (a traceback, exit 1)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import grad  # noqa: E402
from grad import backend as B  # noqa: E402
from minis2s import distributed  # noqa: E402


def nan_on_one_rank():
    from minis2s.guard import TrainingError
    from minis2s.trainer_core import Trainer
    comm = distributed.init()
    model = grad.nn.Linear(3, 1, generator=grad.Generator(0))
    optimizer = grad.optim.Adam(model.parameters(), lr=0.01)
    x = grad.Tensor(B.asarray([[1.0, 2.0, 3.0]] * 4))

    def step(idx, comm, guard, epoch):     # a training step in train_step's order and contract
        n = comm.sum_count(len(idx))
        loss = grad.sum(model(x[:len(idx)]) ** 2) / float(n)
        if comm.rank == 1 and trainer.engine.state.iteration == 3:
            loss = loss * float("nan")
        value = loss.item()
        if (problem := guard.check_loss(value)):
            return {"loss": value, "n_tokens": len(idx), "problem": problem, "can_skip": True}
        optimizer.zero_grad()
        loss.backward()
        comm.sum_gradients(model.parameters())
        optimizer.step()
        return {"loss": value, "n_tokens": len(idx), "grad_norm": 0.0}

    trainer = Trainer(model, optimizer, step=step, batches=lambda e: [[0, 1, 2, 3]] * 10,
                      validate=lambda: {"loss": 0.0}, describe=lambda r, i: "", epochs=1,
                      max_grad_norm=1.0, comm=comm, log=lambda m: None)
    try:
        trainer.fit()
    except TrainingError as exc:
        os.write(1, f"rank {comm.rank}: {exc}\n".encode())        # one write: lines stay whole
        sys.exit(1)
    os.write(1, f"rank {comm.rank}: no error\n".encode())


def data_error_on_one_rank(out, error=ValueError):
    from minis2s import cli, train
    if os.environ.get("PMI_RANK") == "1":
        def broken(*args, **kwargs):
            raise error("injected: rank 1 cannot read its data")
        train.prepare_data = broken
    sys.exit(cli.main(["train", "--task", "dates", "--n-train", "64", "--n-valid", "16",
                       "--n-test", "16", "--hidden-size", "8", "--emb-size", "4", "--epochs", "1",
                       "--quiet", "--out", out]))


if __name__ == "__main__":
    if sys.argv[1] == "nan":
        nan_on_one_rank()
    else:                       # "data": an expected error (exit 2); "bug": a traceback (exit 1)
        data_error_on_one_rank(sys.argv[2], ValueError if sys.argv[1] == "data" else RuntimeError)
