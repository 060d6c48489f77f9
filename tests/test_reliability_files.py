"""Reliability II: crafted or damaged files, absurd options, exit codes and messages (issue 12).

Crafted files are refused with exit code 2 and one line naming the file, and a refusal never
costs more than 50 MiB of peak memory above loading a valid model of the same kind: the peak is
the subprocess's own ``ru_maxrss`` (``os.wait4``), and every subprocess that could blow up runs
under an address-space limit (``RLIMIT_AS``) so that a regression fails the test instead of the
machine. Absurd options are refused with the memory estimate, or streamed. Everything else runs
``minis2s.cli.main`` in-process (docs/reliability.md, "Crafted files, absurd options, messages").
"""
import errno
import io
import json
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import grad
from minis2s import cli, memory
from minis2s.checkpoint import CheckpointError, load_checkpoint
from minis2s.lm.lstm_lm import LSTMLanguageModel
from minis2s.lm.training import LMConfig, fit_lm, load_lm
from minis2s.models import Seq2Seq
from test_reliability import TINY, env, in_process, model_dir  # noqa: F401 (fixtures)

SLACK_MIB = 50                      # the most a refused file may cost above a valid load
ADDRESS_LIMIT = 4 << 30             # RLIMIT_AS of every measured subprocess
LINES = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the cat ate"] * 5


# ----------------------------------------------------------------------------- helpers
def _cap_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_LIMIT, ADDRESS_LIMIT))


def run_peak(args, cwd, input=b"", timeout=120):
    """Run ``minis2s ARGS``; returns ``(exit code, stdout, stderr, peak RSS in MiB)``. The peak is
    this child's own ``ru_maxrss`` from ``os.wait4``; a run past ``timeout`` is killed and its
    exit code is ``"timeout"``."""
    data = input.encode("utf-8") if isinstance(input, str) else input
    with tempfile.TemporaryFile() as i, tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
        i.write(data)
        i.seek(0)
        proc = subprocess.Popen([sys.executable, "-m", "minis2s", *args], cwd=cwd, env=env(),
                                stdin=i, stdout=o, stderr=e, preexec_fn=_cap_address_space)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                code = "timeout"
                break
            time.sleep(0.01)
        proc.returncode = -1                      # reaped here; Popen must not wait for it
        o.seek(0)
        e.seek(0)
        return code, o.read().decode("utf-8", "replace"), e.read().decode("utf-8", "replace"), \
            usage.ru_maxrss / 1024


def _one_error_line(err: str) -> str:
    """The single ``minis2s: error:`` line of ``err`` (nothing else on stderr, no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minis2s: error: "), err
    return lines[0]


def _copy(src, tmp_path, name="broken"):
    target = tmp_path / name
    shutil.copytree(src, target)
    return target


def _edit_json(path, change):
    d = json.loads(path.read_text(encoding="utf-8"))
    d = change(d) or d
    path.write_text(json.dumps(d), encoding="utf-8")


def _npz_arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].copy() for k in z.files}


def _edit_npz(path, change):
    arrays = _npz_arrays(path)
    change(arrays)
    np.savez(path, **arrays)


def _meta(arrays):
    return json.loads(arrays["json/meta"].tobytes().decode("utf-8"))


def _set_meta(arrays, meta):
    arrays["json/meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)


def _npy_header(shape, descr="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _crc32_after_zeros(crc: int, n: int) -> int:
    """``zlib.crc32(bytes(n), crc)`` without making the bytes. CRC-32 is linear over GF(2): one
    zero bit shifts the register right and folds the polynomial in when a 1 falls out, a 32x32
    matrix; n zero bytes are that matrix to the power 8n, by repeated squaring."""
    def times(columns, vector):
        out, i = 0, 0
        while vector:
            if vector & 1:
                out ^= columns[i]
            vector, i = vector >> 1, i + 1
        return out
    step = [0xEDB88320] + [1 << i for i in range(31)]      # images of bits 0..31
    register, bits = crc ^ 0xFFFFFFFF, 8 * n
    while bits:
        if bits & 1:
            register = times(step, register)
        step = [times(step, c) for c in step]
        bits >>= 1
    return register ^ 0xFFFFFFFF


def _write_zip(path, members):
    """A zip file from ``(name, method, stored bytes, crc, uncompressed size)`` members, written
    by hand so that a member's stored bytes can be a crafted deflate stream."""
    out, central = bytearray(), bytearray()
    for name, method, payload, crc, size in members:
        offset, raw = len(out), name.encode()
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload),
                           size, len(raw), 0) + raw + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc,
                               len(payload), size, len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central),
                      len(out), 0)
    Path(path).write_bytes(bytes(out + central + end))


def _inflating_checkpoint(path, entry, gib=2):
    """Rewrite the checkpoint ``path`` with ``entry`` replaced by a valid member (CRC and sizes
    right) of ``gib`` GiB of float32 zeros stored as ~2 MB of deflate: ``block`` compresses
    16 MiB of zeros after a full flush, so it references nothing before it and can be repeated."""
    with np.load(path, allow_pickle=False) as z:
        names = z.files
    import zipfile
    with zipfile.ZipFile(path) as zf:
        members = [(f"{n}.npy", 0, zf.read(f"{n}.npy")) for n in names if n != entry]
    members = [(name, 0, data, zlib.crc32(data), len(data)) for name, _, data in members]
    size = gib << 30
    header = _npy_header((size // 4,))
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = co.compress(header) + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(bytes(16 << 20)) + co.flush(zlib.Z_FULL_FLUSH)
    stream = head + block * (size // (16 << 20)) + co.flush(zlib.Z_FINISH)
    crc = _crc32_after_zeros(zlib.crc32(header), size)
    members.append((f"{entry}.npy", 8, stream, crc, len(header) + size))
    _write_zip(path, members)


def test_the_zero_extended_crc_matches_zlib():
    for crc, n in ((0, 1), (zlib.crc32(b"abc"), 1000), (12345, 70001)):
        assert _crc32_after_zeros(crc, n) == zlib.crc32(bytes(n), crc)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
    """An LSTM and an n-gram language model trained on a tiny corpus."""
    root = tmp_path_factory.mktemp("lm")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    quiet = dict(corpus=str(corpus), min_freq=1, quiet=True)
    fit_lm(LMConfig(model="ngram", order=2, out=str(root / "ngram"), **quiet), log=lambda m: None)
    fit_lm(LMConfig(model="lstm", epochs=1, hidden_size=8, emb_size=8, out=str(root / "lstm"),
                    **quiet), log=lambda m: None)
    return root


@pytest.fixture(scope="module")
def baselines(model_dir, lm_dirs):
    """Peak RSS (MiB) of reading each valid model: what a refused file is measured against."""
    cwd = model_dir.parent
    peaks = {}
    for kind, args, text in (("seq2seq", ["translate", "--model", str(model_dir)], "1 Jan 2000\n"),
                             ("lstm", ["lm", "score", "--model", str(lm_dirs / "lstm")], "the cat\n"),
                             ("ngram", ["lm", "score", "--model", str(lm_dirs / "ngram")], "the cat\n")):
        code, _, err, peak = run_peak(args, cwd, text)
        assert code == 0, err
        peaks[kind] = peak
    return peaks


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    """One-epoch runs to resume and to take checkpoints from: Adam (the run resumed), SGD, a
    smaller hidden size, and another task."""
    root = tmp_path_factory.mktemp("resumable")
    for name, extra in (("adam", []), ("sgd", ["--optimizer", "sgd"]),
                        ("small", ["--hidden-size", "16"]), ("reverse", ["--task", "reverse"])):
        assert cli.main(["train", *TINY, *extra, "--epochs", "1", "--out", str(root / name)]) == 0
    return root


# ----------------------------------------------------------------------------- crafted files
def _in_best(change):
    return lambda d: _edit_npz(d / "best.npz", change)


def _retype(dtype):
    def change(arrays):
        key = "model/encoder.embedding.weight"
        arrays[key] = np.zeros(arrays[key].shape, dtype=dtype)
    return change


def _poison(value):
    def change(arrays):
        arrays["model/encoder.embedding.weight"][1, 2] = value
    return change


def _set_meta_to(value):
    return lambda arrays: arrays.update({"json/meta": np.frombuffer(value, dtype=np.uint8)})


TRANSLATE_CASES = {
    "config_is_a_list": (lambda d: (d / "config.json").write_text("[1, 2]"),
                         "config.json: the file is a list, expected a JSON object"),
    "meta_is_a_list": (_in_best(_set_meta_to(b"[1]")),
                       "best.npz: corrupted metadata (expected a JSON object, got list)"),
    "meta_is_a_string": (_in_best(_set_meta_to(b'"x"')),
                         "best.npz: corrupted metadata (expected a JSON object, got str)"),
    "structured_dtype": (_in_best(_retype("i4,f4")),
                         "best.npz: entry 'model/encoder.embedding.weight' has dtype "
                         "[('f0', '<i4'), ('f1', '<f4')]"),
    **{f"dtype_{name}": (_in_best(_retype(dtype)),
                         f"best.npz: entry 'model/encoder.embedding.weight' has dtype {shown}; "
                         "weights and optimizer states are float32 or float64")
       for name, dtype, shown in (("int8", "int8", "int8"), ("float16", "float16", "float16"),
                                  ("bool", "bool", "bool"), ("str", "U3", "<U3"),
                                  ("complex", "complex64", "complex64"),
                                  ("datetime64", "datetime64[s]", "datetime64[s]"))},
    "nan_weight": (_in_best(_poison(np.nan)),
                   "best.npz: entry 'model/encoder.embedding.weight' holds 1 non-finite value(s)"),
    "inf_weight": (_in_best(_poison(np.inf)),
                   "best.npz: entry 'model/encoder.embedding.weight' holds 1 non-finite value(s)"),
}


@pytest.mark.parametrize("case", sorted(TRANSLATE_CASES))
def test_crafted_model_files_are_refused_with_exit_2_naming_the_file(
        model_dir, tmp_path, in_process, capsys, case):
    damage, expected = TRANSLATE_CASES[case]
    broken = _copy(model_dir, tmp_path)
    damage(broken)
    (tmp_path / "in.txt").write_text("1 Jan 2000\n", encoding="utf-8")
    capsys.readouterr()
    code = in_process(["translate", "--model", str(broken), "--input", "in.txt"])
    err = capsys.readouterr().err
    assert code == 2, err
    line = _one_error_line(err)
    assert f"{broken}/{expected}" in line, line


def test_a_crafted_lm_checkpoint_metadata_is_refused_naming_the_file(lm_dirs, tmp_path, in_process, capsys):
    broken = _copy(lm_dirs / "lstm", tmp_path)
    _edit_npz(broken / "best.npz", _set_meta_to(b"[1]"))
    (tmp_path / "in.txt").write_text("the cat\n", encoding="utf-8")
    capsys.readouterr()
    assert in_process(["lm", "score", "--model", str(broken), "--input", "in.txt"]) == 2
    assert (f"{broken}/best.npz: corrupted metadata (expected a JSON object, got list)"
            in _one_error_line(capsys.readouterr().err))


def _huge_hidden(d):
    _edit_json(d / "config.json", lambda c: c["model"].update(hidden_size=1_000_000_000))


def _huge_order(d):
    _edit_json(d / "ngram.json", lambda c: c.update(order=1_000_000_000))


def _inflating_member(d):
    _inflating_checkpoint(d / "best.npz", "model/encoder.embedding.weight")


def _tera_shape(d):
    """The embedding's entry replaced by a header declaring 10**12 floats (and 64 bytes)."""
    path = d / "best.npz"
    arrays = _npz_arrays(path)
    del arrays["model/encoder.embedding.weight"]
    np.savez(path, **arrays)
    import zipfile
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("model/encoder.embedding.weight.npy", _npy_header((10 ** 12,)) + bytes(64))


MEMORY_CASES = {   # kind, damage, the command's model kind, expected part of the message
    "npz_member_inflating_to_2_gib": ("seq2seq", _inflating_member,
                                      "best.npz: weights do not match the config: shape mismatch: "
                                      "encoder.embedding.weight"),
    "npz_header_declaring_10_12_floats": ("seq2seq", _tera_shape,
                                          "best.npz: corrupted entry "
                                          "'model/encoder.embedding.weight.npy' (its header "
                                          "declares shape (1000000000000,)"),
    "seq2seq_hidden_size_1e9": ("seq2seq", _huge_hidden,
                                "config.json: invalid model config (a Seq2Seq model of "),
    "lstm_lm_hidden_size_1e9": ("lstm", _huge_hidden,
                                "config.json: unusable model entry (an LSTM language model of "),
    "ngram_order_1e9": ("ngram", _huge_order,
                        "ngram.json: not a usable n-gram model (an order-1000000000 kneser-ney "
                        "n-gram model"),
}


@pytest.mark.parametrize("case", sorted(MEMORY_CASES))
def test_crafted_files_are_refused_in_bounded_memory(model_dir, lm_dirs, baselines, tmp_path, case):
    kind, damage, expected = MEMORY_CASES[case]
    source = model_dir if kind == "seq2seq" else lm_dirs / kind
    broken = _copy(source, tmp_path)
    damage(broken)
    args, text = ((["translate", "--model", str(broken)], "1 Jan 2000\n") if kind == "seq2seq"
                  else (["lm", "score", "--model", str(broken)], "the cat\n"))
    code, _, err, peak = run_peak(args, tmp_path, text, timeout=60)
    assert code == 2, err
    assert peak <= baselines[kind] + SLACK_MIB, (peak, baselines[kind], err)
    assert f"{broken}/{expected}" in _one_error_line(err), err


# ----------------------------------------------------------------------------- resuming
def _from_run(name):
    return lambda root, d: shutil.copy(root / name / "last.npz", d / "last.npz")


def _meta_change(change):
    def damage(root, d):
        def edit(arrays):
            meta = _meta(arrays)
            change(meta)
            _set_meta(arrays, meta)
        _edit_npz(d / "last.npz", edit)
    return damage


RESUME_CASES = {
    "sgd_checkpoint_into_an_adam_run": (_from_run("sgd"),
                                        "last.npz: the optimizer state is SGD's (lr, momentum, "
                                        "weight_decay), but this run uses Adam"),
    "checkpoint_of_another_size": (_from_run("small"),
                                   "last.npz: weights do not match the config: shape mismatch: "),
    "checkpoint_of_another_task": (_from_run("reverse"),
                                   "last.npz: weights do not match the config: shape mismatch: "),
    "bad_optimizer_entry": (_meta_change(lambda m: m.update(optimizer={"param_groups": 3})),
                            "last.npz: corrupted optimizer entry"),
    "empty_trainer_state": (_meta_change(lambda m: m.update(trainer={})),
                            "last.npz: the trainer state lacks epoch, iteration"),
    "nan_in_the_optimizer_state": (lambda root, d: _edit_npz(
        d / "last.npz", lambda a: a["optim/0/exp_avg"].__setitem__((0, 0), np.nan)),
        "last.npz: entry 'optim/0/exp_avg' holds 1 non-finite value(s)"),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resuming_from_a_foreign_or_damaged_checkpoint_is_refused_naming_it(
        resumable, tmp_path, in_process, capsys, case):
    damage, expected = RESUME_CASES[case]
    run_dir = _copy(resumable / "adam", tmp_path, "run")
    damage(resumable, run_dir)
    before = (run_dir / "last.npz").read_bytes()
    capsys.readouterr()
    code = in_process(["train", "--resume", "run", "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"run/{expected}" in _one_error_line(err), err
    assert (run_dir / "last.npz").read_bytes() == before             # nothing was written


def test_a_resumed_config_with_a_bad_train_entry_is_refused_naming_it(resumable, tmp_path, in_process, capsys):
    run_dir = _copy(resumable / "adam", tmp_path, "run")
    _edit_json(run_dir / "config.json", lambda c: c["train"].update(hidden_size=1e9))
    capsys.readouterr()
    assert in_process(["train", "--resume", "run", "--epochs", "2", "--quiet"]) == 2
    assert ("run/config.json: train.hidden_size is 1000000000.0, expected an even positive integer"
            in _one_error_line(capsys.readouterr().err))


# ----------------------------------------------------------------------------- absurd options
@pytest.mark.parametrize("args,what", [
    (["train", "--hidden-size", "1000000000"], "training a model with --emb-size 64 --hidden-size 1000000000"),
    (["train", "--emb-size", "1000000000"], "training a model with --emb-size 1000000000"),
    (["lm", "train", "--builtin", "markov", "--hidden-size", "1000000000"],
     "training an LSTM language model with --emb-size 64 --hidden-size 1000000000"),
    (["lm", "train", "--builtin", "markov", "--emb-size", "1000000000"],
     "training an LSTM language model with --emb-size 1000000000"),
])
def test_absurd_model_sizes_are_refused_with_the_estimate(tmp_path, in_process, capsys, args, what):
    capsys.readouterr()
    code = in_process([*args, "--out", "run"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2, line
    assert what in line and "of memory (estimate), more than the" in line
    assert "available (MemAvailable)" in line
    assert not (tmp_path / "run").exists()                            # refused before any work


def test_layers_100000_are_refused_against_max_memory(tmp_path, in_process, capsys):
    capsys.readouterr()
    code = in_process(["train", "--layers", "100000", "--max-memory", "64G", "--out", "run"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2, line
    assert "--layers 100000 (23,142,450,437 parameters or more) needs about 344.8 GiB" in line
    assert "more than the 64.0 GiB available (--max-memory)" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_a_beam_of_a_billion_is_refused_with_the_estimate(model_dir, tmp_path, command):
    (tmp_path / "d.tsv").write_text("1 Jan 2000\t2000-01-01\n", encoding="utf-8")
    args = ["--data", "d.tsv"] if command == "evaluate" else []
    code, _, err, _ = run_peak([command, "--model", str(model_dir), "--beam-size", "1000000000",
                                *args], tmp_path, "1 Jan 2000\n", timeout=60)
    assert code == 2, err
    line = _one_error_line(err)
    assert "beam search with beam size 1000000000 over 1 sentence(s) needs about" in line, line


def test_lm_generate_of_a_hundred_million_sentences_streams_in_constant_memory(lm_dirs, baselines, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "minis2s", "lm", "generate", "--model",
                             str(lm_dirs / "lstm"), "--n", "100000000"], cwd=tmp_path, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_cap_address_space)
    try:
        first = [proc.stdout.readline() for _ in range(300)]           # they come as sampled
        with open(f"/proc/{proc.pid}/status", encoding="ascii") as f:   # (no VmHWM once it ended)
            peak = [int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")]
        still_running = proc.poll() is None
        proc.stdout.close()                                             # like `| head -300`
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert all(line.endswith(b"\n") for line in first), err
    assert still_running and peak
    assert peak[0] <= baselines["lstm"] + SLACK_MIB, (peak, baselines["lstm"])
    assert code == 141 and err == "", (code, err)        # a closed pipe ends it quietly


def test_lm_generate_in_batches_draws_what_one_call_draws_and_any_count(lm_dirs):
    lm = load_lm(lm_dirs / "lstm")
    at_once = lm.model.generate(20, 12, 1.0, None, False, None, grad.Generator(3))
    expected = [lm.tokenizer.detokenize(lm.vocab.decode(o)) for o in at_once]
    assert list(lm.iter_generate(20, 12, seed=3)) == expected == lm.generate(20, 12, seed=3)
    assert len(list(lm.iter_generate(130, 5, seed=3, batch=64))) == 130


def test_lm_train_ngram_of_order_a_million_is_refused_with_the_estimate(lm_dirs, tmp_path):
    code, _, err, _ = run_peak(["lm", "train", "--corpus", str(lm_dirs / "corpus.txt"), "--model",
                                "ngram", "--order", "1000000", "--out", "run"], tmp_path, timeout=60)
    assert code == 2, err
    line = _one_error_line(err)
    assert "an order-1000000 kneser-ney n-gram model of" in line and "needs about" in line, line
    assert not (tmp_path / "run" / "ngram.json").exists()


def test_lm_train_drops_a_5_mb_line_with_the_warning_seq2seq_gives(tmp_path):
    corpus = tmp_path / "corpus.txt"
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("w " * 2_500_000 + "\n")                                # 5 MB, 2.5 million words
        f.write("\n".join(LINES[:19]) + "\n")
    code, out, err, _ = run_peak(["lm", "train", "--corpus", str(corpus), "--epochs", "1",
                                  "--hidden-size", "8", "--emb-size", "8", "--min-freq", "1",
                                  "--out", "run", "--quiet"], tmp_path, timeout=120)
    assert code == 0, err
    assert err.strip() == ("minis2s: warning: train: dropped 1 of 16 sentences longer than "
                           "--max-length 5000 tokens"), err
    assert "model saved in run" in out


@pytest.fixture(scope="module")
def wide_lm(tmp_path_factory):
    """An LSTM language model of some 2770 words: a long line's scores over the vocabulary are big."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(3000)]
    lines = [" ".join(rng.choice(words, 8)) for _ in range(1200)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fit_lm(LMConfig(corpus=str(root / "corpus.txt"), model="lstm", epochs=1, hidden_size=8,
                    emb_size=8, min_freq=1, quiet=True, out=str(root / "lm")),
           log=lambda m: None)
    assert len(load_lm(root / "lm").vocab) > 2500
    return root / "lm"


def test_lm_score_of_a_long_line_runs_in_bounded_memory(wide_lm, tmp_path):
    short = run_peak(["lm", "score", "--model", str(wide_lm)], tmp_path, "w1 w2 w3\n")
    line = " ".join(f"w{i % 3000}" for i in range(25_000)) + "\n"       # scores: 25000 x 2770
    code, out, err, peak = run_peak(["lm", "score", "--model", str(wide_lm)], tmp_path, line,
                                    timeout=120)
    assert short[0] == 0 and code == 0, (short[2], err)
    assert out.splitlines()[1].split("\t")[2] == "25001"               # every token scored (after the header)
    assert peak <= short[3] + SLACK_MIB, (peak, short[3])


def test_lm_score_in_slices_gives_the_probabilities_of_one_pass(lm_dirs):
    lm = load_lm(lm_dirs / "lstm")
    texts = ["the cat sat on the mat " * 40, "a dog", "", "the cat ate"]
    at_once = lm.score(texts)
    lm = load_lm(lm_dirs / "lstm")
    lm.model.score_cells = 3 * len(lm.vocab)              # a sentence at a time, 3 steps a slice
    sliced = lm.score(texts)
    for (a, n), (b, m) in zip(at_once, sliced, strict=True):
        assert n == m and b == pytest.approx(a, rel=1e-5)


# ----------------------------------------------------------------------------- memory estimates
def test_the_parameter_estimates_are_the_parameter_counts_of_built_models():
    for args in [(7, 9, 4, 6, 1, "general", True), (7, 9, 6, 8, 3, "dot", False),
                 (11, 5, 4, 6, 2, None, True)]:
        model = Seq2Seq(*args[:4], num_layers=args[4], attention=args[5], input_feeding=args[6])
        assert memory.seq2seq_params(*args) == sum(p.data.size for p in model.parameters())
    for v, e, h, n in [(11, 4, 6, 1), (13, 6, 6, 3)]:
        model = LSTMLanguageModel(v, e, h, n)
        assert memory.lstm_lm_params(v, e, h, n) == sum(p.data.size for p in model.parameters())


def test_sizes_and_the_memory_available(monkeypatch):
    assert [memory.parse_size(s) for s in ("512M", "4G", "1.5GB", "2TiB", "1000", "64k")] == \
        [512 << 20, 4 << 30, 3 << 29, 2 << 40, 1000, 64 << 10]
    for bad in ("", "-1G", "4Q", "G", "0"):
        with pytest.raises(ValueError):
            memory.parse_size(bad)
    if Path("/proc/meminfo").is_file():
        text = Path("/proc/meminfo").read_text()
        if "MemAvailable:" in text:
            kib = int(text.split("MemAvailable:")[1].split()[0])
            assert abs(memory.mem_available() - kib * 1024) < 256 << 20     # it moves a little
    monkeypatch.setattr(memory, "_limit", 1 << 30)
    with pytest.raises(memory.MemoryLimitError, match=r"a thing needs about 2.0 GiB of memory "
                       r"\(estimate\), more than the 1.0 GiB available \(--max-memory\)"):
        memory.require(2 << 30, "a thing")
    memory.require(1 << 29, "a smaller thing")


# ----------------------------------------------------------------------------- output paths
@pytest.mark.parametrize("args,expected", [
    (["train", "--out", "afile"], "--out afile: exists and is not a directory"),
    (["train", "--out", "dangling"],
     "--out dangling: a symbolic link to nowhere, which does not exist; expected a directory"),
    (["data", "--task", "dates", "--out", "afile"], "--out afile: exists and is not a directory"),
    (["lm", "train", "--builtin", "markov", "--out", "afile"], "--out afile: exists and is not a directory"),
])
def test_an_output_directory_that_is_a_file_is_bad_input(tmp_path, in_process, capsys, args, expected):
    (tmp_path / "afile").write_text("mine\n")
    os.symlink("nowhere", tmp_path / "dangling")
    capsys.readouterr()
    code = in_process(args)
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and line == f"minis2s: error: {expected}", line
    assert (tmp_path / "afile").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dangling"]


@pytest.fixture
def no_translation(monkeypatch):
    """Fails the test if any sentence gets translated."""
    import minis2s.translator as tr

    def refuse(*a, **k):
        raise AssertionError("translated before the output path was checked")
    monkeypatch.setattr(tr.Translator, "translate", refuse)


@pytest.mark.parametrize("output,expected", [
    ("adir", "--output adir: is a directory, expected a file name"),
    ("missing/out.txt", "--output missing/out.txt: directory missing does not exist"),
])
def test_translate_checks_the_output_path_before_any_work(
        model_dir, tmp_path, in_process, capsys, no_translation, output, expected):
    (tmp_path / "adir").mkdir()
    (tmp_path / "in.txt").write_text("1 Jan 2000\n", encoding="utf-8")
    capsys.readouterr()
    code = in_process(["translate", "--model", str(model_dir), "--input", "in.txt", "--output", output])
    assert code == 2
    assert _one_error_line(capsys.readouterr().err) == f"minis2s: error: {expected}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_translate_refuses_a_read_only_output_before_any_work(model_dir, tmp_path, in_process, capsys, no_translation):
    (tmp_path / "in.txt").write_text("1 Jan 2000\n", encoding="utf-8")
    (tmp_path / "ro.txt").write_text("")
    os.chmod(tmp_path / "ro.txt", stat.S_IRUSR)
    capsys.readouterr()
    assert in_process(["translate", "--model", str(model_dir), "--input", "in.txt", "--output", "ro.txt"]) == 2
    assert "--output ro.txt: not writable" in _one_error_line(capsys.readouterr().err)


class _FillsUp:
    """A text file whose disk fills up after ``room`` characters."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, text):
        if len(text) > self.room:
            self.f.write(text[:self.room])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(text)
        return self.f.write(text)

    def flush(self):              # translate flushes each line as it is written
        self.f.flush()

    def close(self):
        self.f.close()


def test_a_full_disk_during_translate_names_the_file_and_removes_the_partial_output(
        model_dir, tmp_path, in_process, capsys, monkeypatch):
    (tmp_path / "in.txt").write_text("1 Jan 2000\n2 Feb 2001\n3 Mar 2002\n", encoding="utf-8")
    monkeypatch.setattr(cli, "open", lambda *a, **k: _FillsUp(open(*a, **k), 1), raising=False)
    capsys.readouterr()
    code = in_process(["translate", "--model", str(model_dir), "--input", "in.txt", "--output", "out.txt"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1, line
    assert line == ("minis2s: error: No space left on device (out.txt); the partial output was "
                    "removed")
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_translate_output_to_dev_full_names_it_and_leaves_the_device(model_dir, tmp_path, in_process, capsys):
    (tmp_path / "in.txt").write_text("1 Jan 2000\n", encoding="utf-8")
    capsys.readouterr()
    code = in_process(["translate", "--model", str(model_dir), "--input", "in.txt", "--output", "/dev/full"])
    assert code == 1
    assert _one_error_line(capsys.readouterr().err) == \
        "minis2s: error: No space left on device (/dev/full)"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def _disk_full_for(monkeypatch, name, after_lines):
    """``os.write`` to a file called ``name`` fails with ENOSPC half-way through the line after
    the first ``after_lines`` lines; every other write goes through."""
    real = os.write
    seen = {"lines": 0}

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(name):
            if seen["lines"] >= after_lines:
                real(fd, bytes(data[:len(data) // 2]))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            seen["lines"] += 1
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_full_disk_during_lm_train_names_the_file_and_leaves_no_partial_line(
        lm_dirs, tmp_path, in_process, capsys, monkeypatch):
    _disk_full_for(monkeypatch, "log.jsonl", after_lines=1)
    capsys.readouterr()
    code = in_process(["lm", "train", "--corpus", str(lm_dirs / "corpus.txt"), "--epochs", "2",
                       "--hidden-size", "8", "--emb-size", "8", "--min-freq", "1", "--out", "run",
                       "--quiet"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1, line
    assert line == ("minis2s: error: No space left on device (run/log.jsonl); previously saved "
                    "checkpoints are untouched")
    log = (tmp_path / "run" / "log.jsonl").read_text(encoding="utf-8")
    assert [json.loads(x)["epoch"] for x in log.splitlines()] == [1]          # no half line
    assert load_checkpoint(tmp_path / "run" / "last.npz")["trainer"]["epoch"] == 1


# ----------------------------------------------------------------------------- messages
@pytest.mark.parametrize("damage,expected", [
    (lambda d: (d / "src_vocab.json").unlink(), "src_vocab.json: file not found"),
    (lambda d: (d / "src_vocab.json").write_text("{"), "src_vocab.json: not a vocabulary file "
                                                       "(not valid JSON"),
])
def test_a_vocabulary_error_names_the_file_once(model_dir, tmp_path, in_process, capsys, damage, expected):
    broken = _copy(model_dir, tmp_path)
    damage(broken)
    (tmp_path / "in.txt").write_text("1 Jan 2000\n", encoding="utf-8")
    capsys.readouterr()
    assert in_process(["translate", "--model", str(broken), "--input", "in.txt"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{broken}/{expected}" in line and line.count("src_vocab.json") == 1, line


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_translate_or_evaluate_on_a_language_model_says_which_command_reads_it(
        lm_dirs, tmp_path, in_process, capsys, command):
    (tmp_path / "d.tsv").write_text("a\tb\n", encoding="utf-8")
    (tmp_path / "in.txt").write_text("a\n", encoding="utf-8")
    extra = ["--data", "d.tsv"] if command == "evaluate" else ["--input", "in.txt"]
    model = lm_dirs / "lstm"
    capsys.readouterr()
    assert in_process([command, "--model", str(model), *extra]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"minis2s: error: {model}: a language-model run (lm-lstm), not a translation model; read "
        f"it with 'minis2s lm score' or 'minis2s lm generate' --model {model}")


def test_lm_score_on_a_translation_run_says_which_command_reads_it(model_dir, tmp_path, in_process, capsys):
    (tmp_path / "in.txt").write_text("a\n", encoding="utf-8")
    capsys.readouterr()
    assert in_process(["lm", "score", "--model", str(model_dir), "--input", "in.txt"]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"minis2s: error: {model_dir}: a translation run, not a language model; read it with "
        f"'minis2s translate' or 'minis2s evaluate' --model {model_dir}")


STDIN_CASES = {   # bytes on stdin: what --input says for them in a file, what stdin says
    "bad_byte": (b"1 Jan 2000\n\xff 2000\n",
                 "in.txt:2: not valid UTF-8 (byte 0xff at byte offset 0 of the line: invalid start byte)",
                 "<stdin>:2: not valid UTF-8 (byte 0xff at byte offset 0 of the line: invalid start byte)"),
    "utf16": ("1 Jan 2000\n".encode("utf-16"),
              "in.txt: file looks UTF-16 encoded (UTF-16 byte-order mark); save it as UTF-8",
              "<stdin>: input looks UTF-16 encoded (UTF-16 byte-order mark); give UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(STDIN_CASES))
def test_stdin_with_bytes_that_are_not_utf8_is_refused_like_input(
        model_dir, tmp_path, in_process, capsys, monkeypatch, case):
    data, file_message, stdin_message = STDIN_CASES[case]
    (tmp_path / "in.txt").write_bytes(data)
    capsys.readouterr()
    assert in_process(["translate", "--model", str(model_dir), "--input", "in.txt"]) == 2
    assert _one_error_line(capsys.readouterr().err) == f"minis2s: error: {file_message}"
    # what Python hands a program whose stdin is not UTF-8 (surrogate escapes), bytes underneath
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8",
                                                       errors="surrogateescape"))
    assert in_process(["translate", "--model", str(model_dir)]) == 2
    assert _one_error_line(capsys.readouterr().err) == f"minis2s: error: {stdin_message}"


def test_a_utf8_byte_order_mark_on_stdin_is_dropped_as_input_drops_it(model_dir, tmp_path):
    plain = run_peak(["translate", "--model", str(model_dir), "--beam-size", "1"], tmp_path,
                     b"1 Jan 2000\n")
    marked = run_peak(["translate", "--model", str(model_dir), "--beam-size", "1"], tmp_path,
                      b"\xef\xbb\xbf1 Jan 2000\n")
    assert plain[0] == marked[0] == 0 and marked[1] == plain[1], marked[2]
    assert "<unk>" not in marked[2]                                   # the mark is not a token


@pytest.mark.parametrize("args", [["train", *TINY, "--epochs", "1", "--dropout", "1.0"],
                                  ["train", *TINY, "--epochs", "1", "--label-smoothing", "1"],
                                  ["lm", "train", "--builtin", "markov", "--epochs", "1",
                                   "--hidden-size", "8", "--dropout", "1"]])
def test_dropout_and_label_smoothing_of_1_are_refused(tmp_path, in_process, capsys, args):
    with pytest.raises(SystemExit) as exc:
        in_process([*args, "--out", "run"])
    assert exc.value.code == 2
    assert "expected a number in [0, 1), got 1.0" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()
