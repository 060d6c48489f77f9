"""Run directories and checkpoints: saved without pickle, written atomically, resumable exactly.

A run directory holds::

    config.json        format version, model config, data config (tokenizers, task, lengths),
                       the training options
    src_vocab.json     the vocabularies
    tgt_vocab.json
    last.npz           the latest checkpoint: model weights, optimizer state and trainer state
    best.npz           the checkpoint with the best validation score so far
    log.jsonl          one JSON line of metrics per epoch

A checkpoint is ONE ``.npz`` file: arrays under ``model/<name>`` and ``optim/<i>/<key>``, and the
JSON-able states (optimizer hyper-parameters, trainer position, random generators) as UTF-8 bytes
in ``json/<name>``. It is written to a temporary file in the same directory, flushed to disk and
renamed over the old one (``os.replace`` is atomic), so a crash or SIGKILL at any moment leaves
either the old or the new checkpoint, never half of one. The file gets the permissions ``open()``
would give it (``0o666 & ~umask`` for a new file, the old mode when it replaces one), so model
directories can be shared. It is read with ``allow_pickle=False``: loading never runs code from
the file, and every entry's CRC is checked before anything is used.
"""
from __future__ import annotations

import json
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from grad import backend as B

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A run directory or checkpoint that cannot be used; the message names the file."""


# ------------------------------------------------------------------------ atomic writes
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    """The permissions ``open(path, "w")`` would leave: the old file's, or ``0o666 & ~umask``."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def atomic_write(path, write_fn, mode: str = "wb") -> None:
    """Write ``path`` through ``write_fn(file)`` into a temporary file, then rename it into place.
    On any error the temporary file is removed, the old ``path`` is left untouched, and an
    ``OSError`` names ``path`` (not the temporary file) in its ``filename``.
    The new file gets the permissions ``open()`` would give it (``tempfile.mkstemp`` makes 0600)."""
    path = Path(path)
    tmp = None
    try:
        perms = _final_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fchmod(f.fileno(), perms)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError) and (exc.filename is None or exc.filename == tmp):
            exc.filename, exc.filename2 = str(path), None
        raise


def write_json(path, obj) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc


# ------------------------------------------------------------------------ checkpoints
def _json_array(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def _to_json(value):
    """Optimizer hyper-parameters and states as JSON (tuples -> lists, 0-d arrays -> numbers)."""
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "shape") and tuple(value.shape) == ():
        return B.to_numpy(value).item()
    return value


def save_checkpoint(path, model, optimizer=None, trainer_state: dict | None = None) -> None:
    """Write model weights, optimizer state and trainer state to one ``.npz``, atomically.
    The model stays where it is (arrays are copied to the host, not moved)."""
    arrays = {}
    for name, value in model.state_dict().items():
        arrays[f"model/{name}"] = B.to_numpy(value)
    meta = {"format_version": FORMAT_VERSION}
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars = []
        for i, state in enumerate(sd["state"]):
            entry = {}
            for key, value in state.items():
                if hasattr(value, "shape") and tuple(value.shape) != ():
                    arrays[f"optim/{i}/{key}"] = B.to_numpy(value)
                else:
                    entry[key] = _to_json(value)
            scalars.append(entry)
        meta["optimizer"] = {"param_groups": [{k: _to_json(v) for k, v in g.items()}
                                              for g in sd["param_groups"]], "scalars": scalars}
    meta["trainer"] = trainer_state or {}
    arrays["json/meta"] = _json_array(meta)
    atomic_write(path, lambda f: np.savez(f, **arrays))


# What a damaged zip file can raise from zipfile and numpy: a flipped byte in a header can announce
# an unknown compression method (NotImplementedError), encryption (RuntimeError), sizes or offsets
# past the end (EOFError, struct.error, OverflowError, ValueError) or a bad CRC (BadZipFile).
_DAMAGE = (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, ValueError,
           zlib.error, struct.error, OverflowError)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by ``save_checkpoint``: ``{"model": {name: array},
    "optimizer": state_dict or None, "trainer": dict}``. Refuses pickles, truncated or corrupted
    files, odd entry names and other format versions, naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            for info in infos:
                name = info.filename
                if (name.startswith("/") or ".." in name.split("/") or "\\" in name
                        or not name.endswith(".npy")):
                    raise CheckpointError(f"{path}: refusing entry with an unsafe or unexpected "
                                          f"name {name!r}")
            for info in infos:          # every entry read once: its CRC-32 must match
                try:
                    with zf.open(info) as f:
                        while f.read(1 << 20):
                            pass
                except _DAMAGE as exc:
                    raise CheckpointError(f"{path}: corrupted entry {info.filename!r} (CRC check "
                                          f"failed or damaged header: {exc})") from exc
    except CheckpointError:
        raise
    except _DAMAGE as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted: {exc})") from exc
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except ValueError as exc:
        if "pickle" in str(exc):    # object arrays need pickle: refused
            raise CheckpointError(f"{path}: refusing to load ({exc}); checkpoints never contain "
                                  "pickles") from exc
        raise CheckpointError(f"{path}: corrupted checkpoint entry ({exc})") from exc
    except _DAMAGE as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    if "json/meta" not in arrays:
        raise CheckpointError(f"{path}: not a minis2s checkpoint (no json/meta entry)")
    try:
        meta = json.loads(arrays.pop("json/meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupted metadata ({exc})") from exc
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version}, this minis2s reads "
                              f"version {FORMAT_VERSION}")
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optimizer = None
    if "optimizer" in meta:
        opt = meta["optimizer"]
        states = [dict(s) for s in opt["scalars"]]
        for key, value in arrays.items():
            if key.startswith("optim/"):
                _, i, name = key.split("/", 2)
                states[int(i)][name] = value
        optimizer = {"param_groups": opt["param_groups"], "state": states}
    return {"model": model, "optimizer": optimizer, "trainer": meta.get("trainer", {})}
