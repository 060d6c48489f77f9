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


def append_line(path, line: str) -> None:
    """Append ``line`` and a newline to a text file (a run's ``log.jsonl``). On a disk error the
    file is cut back to its old length -- no partial line is left -- and the ``OSError`` names
    ``path``."""
    path = Path(path)
    data = memoryview((line + "\n").encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as exc:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            if exc.filename is None:
                exc.filename = str(path)
            raise
    finally:
        os.close(fd)


def write_json(path, obj) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
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


_META_LIMIT = 16 << 20          # bytes of JSON metadata: a real checkpoint has a few kilobytes


def _entry_headers(zf, infos, path) -> dict:
    """``{entry name: (shape, dtype)}`` as each entry's ``.npy`` header declares it, read without
    reading the data (``numpy.lib.format``). Refuses object arrays (they need pickle), headers
    that do not parse, and entries whose size is not what their header declares."""
    from numpy.lib import format as npy
    readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
    headers = {}
    for info in infos:
        try:
            with zf.open(info) as f:
                version = npy.read_magic(f)
                if version not in readers:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, _, dtype = readers[version](f)
                offset = f.tell()
        except _DAMAGE as exc:
            raise CheckpointError(f"{path}: corrupted entry {info.filename!r} (CRC check "
                                  f"failed or damaged header: {exc})") from exc
        if dtype.hasobject:
            raise CheckpointError(f"{path}: refusing to load entry {info.filename!r}: it holds "
                                  "Python objects, which need pickle; checkpoints never contain "
                                  "pickles")
        count = 1
        for n in shape:
            count *= n
        if min(shape, default=0) < 0 or offset + count * dtype.itemsize != info.file_size:
            raise CheckpointError(f"{path}: corrupted entry {info.filename!r} (its header declares "
                                  f"shape {shape} of {dtype}, {count * dtype.itemsize} bytes, but the "
                                  f"entry holds {info.file_size - offset})")
        headers[info.filename[:-len(".npy")]] = (tuple(shape), dtype)
    return headers


def _check_declared(headers: dict, path, model=None) -> None:
    """Refuse, before any data is read, entries of the wrong kind, dtype or size: metadata that
    is not a short byte string, weights or optimizer states that are not float32/float64 arrays,
    and -- given the ``model`` the checkpoint is for -- weights or states whose names or shapes
    are not the model's."""
    for name, (shape, dtype) in headers.items():
        if name == "json/meta":
            if dtype != np.uint8 or len(shape) != 1 or shape[0] > _META_LIMIT:
                raise CheckpointError(f"{path}: corrupted metadata entry 'json/meta' (shape {shape} "
                                      f"of {dtype}; expected at most {_META_LIMIT} bytes of JSON)")
        elif name.startswith(("model/", "optim/")):
            if dtype.kind != "f" or dtype.itemsize not in (4, 8):
                raise CheckpointError(f"{path}: entry {name!r} has dtype {dtype}; weights and "
                                      "optimizer states are float32 or float64")
        else:
            raise CheckpointError(f"{path}: refusing entry with an unsafe or unexpected name "
                                  f"{name + '.npy'!r}")
    if model is None:
        return
    own = {name: tuple(p.shape) for name, p in model.named_parameters()}
    stored = {name[len("model/"):]: shape for name, (shape, _) in headers.items()
              if name.startswith("model/")}
    problems = []
    missing = [k for k in own if k not in stored]
    unexpected = [k for k in stored if k not in own]
    wrong = [f"{k}: expected {own[k]}, got {stored[k]}" for k in own if k in stored and stored[k] != own[k]]
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if wrong:
        problems.append("shape mismatch: " + "; ".join(wrong))
    if problems:
        raise CheckpointError(f"{path}: weights do not match the config: " + " | ".join(problems))
    shapes = list(own.values())
    for name, (shape, _) in headers.items():
        if name.startswith("optim/"):
            index = name.split("/")[1]
            if not index.isdigit() or int(index) >= len(shapes) or shape != shapes[int(index)]:
                raise CheckpointError(f"{path}: optimizer entry {name!r} (shape {shape}) matches no "
                                      f"parameter of the model ({len(shapes)} parameters)")


def _check_meta(meta, arrays: dict, path) -> None:
    """The metadata's structure: a JSON object, a ``trainer`` object, and an ``optimizer`` entry
    with a list of hyper-parameter groups and one scalar dict per parameter state."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupted metadata (expected a JSON object, got "
                              f"{type(meta).__name__})")
    if not isinstance(meta.get("trainer", {}), dict):
        raise CheckpointError(f"{path}: corrupted metadata ('trainer' is a "
                              f"{type(meta['trainer']).__name__}, expected a JSON object)")
    if "optimizer" not in meta:
        if any(k.startswith("optim/") for k in arrays):
            raise CheckpointError(f"{path}: optimizer arrays without an 'optimizer' entry")
        return
    opt = meta["optimizer"]
    ok = (isinstance(opt, dict) and isinstance(opt.get("param_groups"), list)
          and all(isinstance(g, dict) for g in opt["param_groups"])
          and isinstance(opt.get("scalars"), list) and all(isinstance(s, dict) for s in opt["scalars"]))
    if not ok:
        raise CheckpointError(f"{path}: corrupted optimizer entry (expected 'param_groups', a list "
                              "of objects, and 'scalars', a list of objects, one per parameter)")
    for key in arrays:
        if key.startswith("optim/"):
            _, i, name = key.split("/", 2)
            if not i.isdigit() or int(i) >= len(opt["scalars"]) or name in opt["scalars"][int(i)]:
                raise CheckpointError(f"{path}: optimizer array {key!r} does not match the "
                                      f"optimizer entry ({len(opt['scalars'])} parameter states)")


def _check_finite(arrays: dict, path) -> None:
    for key, value in arrays.items():
        finite = np.isfinite(value)
        if not finite.all():
            bad = value.size - int(np.count_nonzero(finite))
            raise CheckpointError(f"{path}: entry {key!r} holds {bad} non-finite value(s) (NaN or "
                                  "inf); refusing unusable weights")


def load_checkpoint(path, model=None) -> dict:
    """Read a checkpoint written by ``save_checkpoint``: ``{"model": {name: array},
    "optimizer": state_dict or None, "trainer": dict}``. Refuses pickles, truncated or corrupted
    files, odd entry names, other format versions, arrays that are not float32/float64 and
    non-finite values, naming the file.

    Every entry's ``.npy`` header is read and checked first, before any data: given the
    ``model`` the checkpoint belongs to, its declared names and shapes must be the model's, so a
    crafted entry that inflates to gigabytes is refused without being read."""
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
            _check_declared(_entry_headers(zf, infos, path), path, model)
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupted metadata ({exc})") from exc
    _check_meta(meta, arrays, path)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version}, this minis2s reads "
                              f"version {FORMAT_VERSION}")
    _check_finite(arrays, path)
    model_arrays = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optimizer = None
    if "optimizer" in meta:
        opt = meta["optimizer"]
        states = [dict(s) for s in opt["scalars"]]
        for key, value in arrays.items():
            if key.startswith("optim/"):
                _, i, name = key.split("/", 2)
                states[int(i)][name] = value
        optimizer = {"param_groups": opt["param_groups"], "state": states}
    return {"model": model_arrays, "optimizer": optimizer, "trainer": meta.get("trainer", {})}
