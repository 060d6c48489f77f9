"""Checkpoints: round trip, atomic writes, and refusal of unsafe or damaged files."""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

import grad
from minis2s import checkpoint as ck
from minis2s.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minis2s.models import Seq2Seq


def small_model(seed=0):
    return Seq2Seq(10, 9, emb_size=4, hidden_size=6, num_layers=1, dropout=0.0,
                   generator=grad.Generator(seed))


def trained_pair(seed=0):
    model = small_model(seed)
    opt = grad.optim.Adam(model.parameters(), lr=0.01)
    src = np.array([[4, 5, 2]]); tin = np.array([[1, 4]]); tout = np.array([[4, 2]])
    loss = model.loss(src, np.array([3]), tin, tout)
    loss.backward()
    opt.step()
    return model, opt


def test_round_trip_restores_weights_optimizer_and_trainer_state(tmp_path):
    model, opt = trained_pair()
    path = tmp_path / "last.npz"
    save_checkpoint(path, model, opt, {"epoch": 3, "iteration": 17, "best": 0.5})
    state = load_checkpoint(path)
    fresh = small_model(seed=1)
    fresh.load_state_dict(state["model"])
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), fresh.named_parameters()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.numpy(), p2.numpy())
    opt2 = grad.optim.Adam(fresh.parameters(), lr=0.5)
    opt2.load_state_dict(state["optimizer"])
    assert opt2.lr == 0.01
    assert opt2.state[0]["step"] == 1
    np.testing.assert_array_equal(grad.backend.to_numpy(opt2.state[0]["exp_avg"]),
                                  grad.backend.to_numpy(opt.state[0]["exp_avg"]))
    assert state["trainer"] == {"epoch": 3, "iteration": 17, "best": 0.5}


def test_a_crash_between_temporary_write_and_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = trained_pair()
    path = tmp_path / "last.npz"
    save_checkpoint(path, model, opt, {"epoch": 1})
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ck.os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model, opt, {"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["trainer"] == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]       # no temporary left behind


def test_a_failing_write_reports_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = trained_pair()
    path = tmp_path / "best.npz"
    save_checkpoint(path, model, opt, {"epoch": 1})

    def failing_savez(f, **arrays):
        f.write(b"partial")
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(ck.np, "savez", failing_savez)
    with pytest.raises(OSError, match="Input/output"):
        save_checkpoint(path, model, opt, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["trainer"] == {"epoch": 1}


def test_saving_does_not_move_or_change_the_model(tmp_path):
    model, opt = trained_pair()
    before = [p.data for p in model.parameters()]
    save_checkpoint(tmp_path / "x.npz", model, opt)
    assert all(a is p.data for a, p in zip(before, model.parameters()))


def test_truncated_and_corrupted_files_are_refused_with_the_file_name(tmp_path):
    model, opt = trained_pair()
    path = tmp_path / "last.npz"
    save_checkpoint(path, model, opt)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(CheckpointError, match="garbage.npz"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.npz")


def _zip_with(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in entries.items():
            zf.writestr(name, payload)


def _npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/minis2s-pwned",))


def test_a_checkpoint_containing_a_pickle_is_refused_and_runs_no_code(tmp_path):
    evil = np.empty(1, dtype=object)
    evil[0] = Boom()
    path = tmp_path / "evil.npz"
    meta = np.frombuffer(b'{"format_version": 1}', dtype=np.uint8)
    _zip_with(path, {"json/meta.npy": _npy_bytes(meta), "model/w.npy": _npy_bytes(evil)})
    if os.path.exists("/tmp/minis2s-pwned"):
        os.unlink("/tmp/minis2s-pwned")
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)
    assert not os.path.exists("/tmp/minis2s-pwned")
    raw = tmp_path / "raw.npz"
    _zip_with(raw, {"model/w.npy": pickle.dumps(Boom())})
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not os.path.exists("/tmp/minis2s-pwned")


@pytest.mark.parametrize("name", ["../escape.npy", "/abs/path.npy", "model/../../x.npy", "notes.txt"])
def test_entries_with_unsafe_names_are_refused(tmp_path, name):
    path = tmp_path / "odd.npz"
    _zip_with(path, {name: _npy_bytes(np.zeros(2))})
    with pytest.raises(CheckpointError, match="unsafe|unexpected"):
        load_checkpoint(path)


def test_other_format_versions_are_refused(tmp_path, monkeypatch):
    model, opt = trained_pair()
    monkeypatch.setattr(ck, "FORMAT_VERSION", 99)
    save_checkpoint(tmp_path / "future.npz", model, opt)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.npz")


def test_mismatched_weights_are_refused_naming_the_keys(tmp_path):
    model, opt = trained_pair()
    save_checkpoint(tmp_path / "m.npz", model, opt)
    other = Seq2Seq(10, 9, emb_size=4, hidden_size=8, num_layers=1, dropout=0.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        other.load_state_dict(load_checkpoint(tmp_path / "m.npz")["model"])
