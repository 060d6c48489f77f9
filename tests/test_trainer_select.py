"""Which epoch the shared trainer keeps as the best (``minis2s.trainer_core.Trainer``): the
selection metric decides, and a tie on a higher-is-better metric (exact match or BLEU, both 0 early
in training) goes to the lower validation loss."""
import numpy as np
import pytest

import grad
from grad import backend as B
from minis2s.trainer_core import Trainer
from minis2s.validate import SEQ2SEQ_TRAINER_OPTIONAL, CheckpointError, trainer_state


def _run(select, higher, scripted):
    model = grad.nn.Linear(2, 1, generator=grad.Generator(0))
    optimizer = grad.optim.SGD(model.parameters(), lr=0.1)
    x = grad.Tensor(B.asarray([[1.0, -1.0]]))
    weights, flags = [], []

    def step(batch, epoch, guard):
        loss = grad.sum(model(x) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "n_tokens": 1, "grad_norm": 0.0}

    def validate():
        weights.append(B.to_numpy(model.weight.data).copy())
        return scripted[len(weights) - 1]

    trainer = Trainer(model, optimizer, step=step, batches=lambda e: [0], validate=validate,
                      describe=lambda record, improved: flags.append(improved) or "",
                      epochs=len(scripted), select=select, higher_is_better=higher,
                      log=lambda m: None, quiet=True)
    trainer.fit()
    return trainer, weights, flags


def test_a_tie_on_exact_match_goes_to_the_lower_loss():
    scripted = [{"exact_match": 0.0, "loss": 2.0}, {"exact_match": 0.0, "loss": 1.5},
                {"exact_match": 0.0, "loss": 1.7}, {"exact_match": 0.5, "loss": 1.9},
                {"exact_match": 0.5, "loss": 1.9}, {"exact_match": 0.25, "loss": 0.1}]
    trainer, weights, flags = _run("exact_match", True, scripted)
    assert flags == [True, True, False, True, False, False]
    assert trainer.best == 0.5 and trainer.tracker["best_loss"] == 1.9
    np.testing.assert_array_equal(B.to_numpy(trainer.best_state["weight"]), weights[3])
    assert trainer.state()["best_loss"] == 1.9          # saved with the checkpoint for a resume


def test_loss_selection_is_unchanged_by_the_tie_break():
    scripted = [{"loss": 2.0}, {"loss": 2.0}, {"loss": 1.0}]
    _, _, flags = _run("loss", False, scripted)
    assert flags == [True, False, True]


def test_best_loss_is_optional_in_a_checkpoint_and_checked_when_present():
    from minis2s.validate import SEQ2SEQ_TRAINER
    state = {"epoch": 1, "iteration": 1, "iteration_in_epoch": 0, "best": 0.5, "bad_epochs": 0,
             "skipped": 0, "lr": 0.1, "epoch_sums": [0.0, 0.0, 0.0, 0.0]}
    required = {k: v for k, v in SEQ2SEQ_TRAINER.items() if not k.endswith("_generator")}
    optional = {"best_loss": SEQ2SEQ_TRAINER_OPTIONAL["best_loss"]}
    assert trainer_state(state, "old.npz", required, optional) is state       # written before it
    trainer_state({**state, "best_loss": 1.25}, "new.npz", required, optional)
    with pytest.raises(CheckpointError, match="bad.npz.*best_loss"):
        trainer_state({**state, "best_loss": "low"}, "bad.npz", required, optional)
