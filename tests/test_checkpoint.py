"""Checkpoints: round trip, atomic writes, and refusal of unsafe or damaged files."""
import errno
import io
import os
import pickle
import stat
import struct
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


# ----------------------------------------------------------------------------- damaged bytes
def stored_data_span(path, entry):
    """(start, end) byte offsets of ``entry``'s stored data inside the zip file ``path``."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(entry)
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    return start, start + info.compress_size


def flip_stored_byte(path, entry=None):
    """Flip one byte in the middle of the array data of ``entry`` (default: the largest entry),
    leaving every zip header intact: only the CRC-32 can tell. Returns the entry's name."""
    with zipfile.ZipFile(path) as zf:
        entry = entry or max(zf.infolist(), key=lambda i: i.file_size).filename
    start, end = stored_data_span(path, entry)
    raw = bytearray(path.read_bytes())
    raw[end - 3] ^= 0x10                       # inside the array values, past the .npy header
    path.write_bytes(bytes(raw))
    return entry


@pytest.mark.parametrize("entry", ["model/encoder.embedding.weight.npy", "optim/0/exp_avg.npy",
                                   "json/meta.npy"])
def test_a_flipped_byte_in_the_stored_data_is_caught_by_the_crc_check(tmp_path, entry):
    model, opt = trained_pair()
    path = tmp_path / "last.npz"
    save_checkpoint(path, model, opt, {"epoch": 1})
    flip_stored_byte(path, entry)
    with zipfile.ZipFile(path) as zf:              # the zip structure itself is still fine
        assert zf.namelist() and zf.getinfo(entry)
    with pytest.raises(CheckpointError, match=rf"last.npz: corrupted entry '{entry}' \(CRC"):
        load_checkpoint(path)


def test_any_flipped_byte_in_the_zip_headers_is_refused_or_harmless(tmp_path):
    """A byte flipped in a local header, the central directory or the end record (and a sample
    of the rest) either makes the load fail with a CheckpointError naming the file, or leaves
    exactly the saved content: never another exception, never different weights."""
    model, opt = trained_pair()
    path = tmp_path / "good.npz"
    save_checkpoint(path, model, opt, {"epoch": 1})
    good = load_checkpoint(path)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    first_central = raw.index(b"PK\x01\x02")                  # central directory signatures
    last_central = raw.rindex(b"PK\x01\x02")
    first_start, _ = stored_data_span(path, infos[0].filename)
    positions = (list(range(0, first_start + 16))                     # first local header
                 + list(range(first_central, first_central + 100))        # first central entries
                 + list(range(last_central, len(raw)))                          # last entry + end record
                 + list(range(0, len(raw), 397)))                          # a sample of the rest
    damaged = tmp_path / "damaged.npz"
    outcomes = {"refused": 0, "harmless": 0}
    for pos in sorted(set(positions)):
        flipped = bytearray(raw)
        flipped[pos] ^= 0xFF
        damaged.write_bytes(bytes(flipped))
        try:
            state = load_checkpoint(damaged)
        except CheckpointError as exc:
            assert "damaged.npz" in str(exc), (pos, exc)
            outcomes["refused"] += 1
            continue
        assert state["trainer"] == good["trainer"], pos
        assert state["model"].keys() == good["model"].keys(), pos
        for k in good["model"]:
            np.testing.assert_array_equal(state["model"][k], good["model"][k], err_msg=f"{pos} {k}")
        outcomes["harmless"] += 1                  # e.g. a timestamp or an unused header field
    assert outcomes["refused"] > 100, outcomes


# ----------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["022", "027", "077"])
def test_new_files_get_the_permissions_open_would_give_them(tmp_path, umask):
    model, opt = trained_pair()
    old = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "last.npz", model, opt)
        ck.write_json(tmp_path / "config.json", {"a": 1})
        with open(tmp_path / "reference", "wb"):
            pass
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE(os.stat(tmp_path / "reference").st_mode) == expected
    for name in ("last.npz", "config.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == expected, name


def test_rewriting_a_file_keeps_its_mode(tmp_path):
    model, opt = trained_pair()
    path = tmp_path / "last.npz"
    save_checkpoint(path, model, opt, {"epoch": 1})
    os.chmod(path, 0o640)
    save_checkpoint(path, model, opt, {"epoch": 2})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert load_checkpoint(path)["trainer"] == {"epoch": 2}


# ----------------------------------------------------------------------------- error names
@pytest.mark.parametrize("where", ["replace", "write"])
def test_a_disk_error_names_the_checkpoint_not_the_temporary_file(tmp_path, monkeypatch, where):
    model, opt = trained_pair()
    path = tmp_path / "last.npz"
    save_checkpoint(path, model, opt, {"epoch": 1})
    if where == "replace":
        def full(src, dst):                    # what os.replace itself raises: both names
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src, None, dst)
        monkeypatch.setattr(ck.os, "replace", full)
    else:
        def full(f, **arrays):                 # what a write raises: no name at all
            f.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(ck.np, "savez", full)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, model, opt, {"epoch": 2})
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(path) and info.value.filename2 is None
    assert load_checkpoint(path)["trainer"] == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]
