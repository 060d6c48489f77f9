"""Reference mode end to end: one whole training step (forward, loss, backward, clipping, Adam)
of the seq2seq model and of the LSTM language model, run on the readable path
(``grad.reference_mode()``) and on the fast path from the same weights in float64, gives the same
loss, the same gradient of every parameter and the same parameters after the update (1e-10);
and a trace of one reference-mode step shows it really takes the composed path."""
import inspect
import sys
from pathlib import Path

import numpy as np
import pytest

import grad
from grad import backend as B
from grad import optim
from minis2s.data.batching import collate
from minis2s.lm.lstm_lm import pad_batch
from minis2s.lm.training import LMConfig, build_lstm_lm, train_step as lm_train_step
from minis2s.train import TrainConfig, build_model, train_step

SRC = [[4, 5, 6, 7, 2], [8, 9, 2], [10, 11, 5, 6, 9, 2], [7, 2]]
TGT = [[1, 4, 5, 6, 2], [1, 7, 2], [1, 8, 9, 5, 2], [1, 9, 9, 2]]
SEQ2SEQ = dict(src_vocab_size=12, tgt_vocab_size=10, emb_size=6, hidden_size=8, num_layers=2,
               dropout=0.1, pad_idx=0, attention="general", input_feeding=True)
TRANSFORMER = dict(arch="transformer", src_vocab_size=12, tgt_vocab_size=10, d_model=8, nhead=2,
                   num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=16, dropout=0.1,
                   pad_idx=0)


def _host(a):
    return B.to_numpy(a).astype(np.float64)


def _seq2seq_step(reference: bool, tf_ratio: float, model_cfg: dict = SEQ2SEQ):
    model = build_model(model_cfg, seed=3, dtype="float64")
    opt = optim.Adam(model.parameters(), lr=0.01)
    cfg = TrainConfig(tf_ratio=tf_ratio, label_smoothing=0.1, max_grad_norm=1.0)
    batch = collate(SRC, TGT, [0, 1, 2, 3])
    with grad.reference_mode(reference):
        out = train_step(model, opt, batch, cfg, tf_generator=grad.Generator(11))
    return out, model


def _lm_step(reference: bool):
    cfg = LMConfig(max_grad_norm=1.0)
    model = build_lstm_lm(dict(vocab_size=10, emb_size=6, hidden_size=8, num_layers=2, dropout=0.1,
                               pad_idx=0, tie_weights=False), seed=5, dtype="float64")
    opt = optim.Adam(model.parameters(), lr=0.01)
    batch = pad_batch(TGT)                                   # BOS ... EOS, padded
    with grad.reference_mode(reference):
        out = lm_train_step(model, opt, batch, cfg, scale=8.0)
    return out, model


def _assert_same_step(fast, reference):
    (out_f, model_f), (out_r, model_r) = fast, reference
    assert "problem" not in out_f and "problem" not in out_r
    assert out_r["loss"] == pytest.approx(out_f["loss"], rel=0, abs=1e-10)
    assert out_r["grad_norm"] == pytest.approx(out_f["grad_norm"], rel=0, abs=1e-10)
    named_r = dict(model_r.named_parameters())
    for name, p in model_f.named_parameters():
        q = named_r[name]
        assert p.dtype == q.dtype == B.get_dtype("float64"), name
        assert p.grad is not None, f"{name} got no gradient"
        np.testing.assert_allclose(_host(q.grad), _host(p.grad), rtol=0, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(_host(q.data), _host(p.data), rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("tf_ratio", [1.0, 0.5])
def test_one_seq2seq_train_step_is_the_same_in_reference_and_fast_mode(tf_ratio):
    fast, reference = _seq2seq_step(False, tf_ratio), _seq2seq_step(True, tf_ratio)
    _assert_same_step(fast, reference)
    start = build_model(SEQ2SEQ, seed=3, dtype="float64")      # the step did move the weights
    moved = max(float(np.abs(_host(p.data) - _host(q.data)).max())
                for p, q in zip(start.parameters(), fast[1].parameters()))
    assert moved > 1e-3


def test_one_transformer_train_step_is_the_same_in_reference_and_fast_mode():
    """The Transformer's fast paths (layer norm, attention, linear, ReLU, embedding, cross-entropy
    with label smoothing, dropout drawn from the same generator) against their references."""
    fast, reference = (_seq2seq_step(r, 1.0, TRANSFORMER) for r in (False, True))
    _assert_same_step(fast, reference)
    start = build_model(TRANSFORMER, seed=3, dtype="float64")
    moved = max(float(np.abs(_host(p.data) - _host(q.data)).max())
                for p, q in zip(start.parameters(), fast[1].parameters()))
    assert moved > 1e-3


def test_one_lstm_lm_train_step_is_the_same_in_reference_and_fast_mode():
    _assert_same_step(_lm_step(False), _lm_step(True))


def _lm_steps_flat(reference: bool, n_steps: int = 3):
    """``n_steps`` steps of an LSTM LM whose embedding is TIED to its output layer (one shared
    parameter, once in the flat buffer) and whose last-layer ``bias_hh`` is frozen (never a
    gradient), with Adam on its flat parameter buffer (or the per-parameter formulas)."""
    cfg = LMConfig(max_grad_norm=0.5)
    model = build_lstm_lm(dict(vocab_size=10, emb_size=8, hidden_size=8, num_layers=2,
                               dropout=0.0, pad_idx=0, tie_weights=True), seed=6, dtype="float64")
    named = dict(model.named_parameters())
    frozen = [n for n in named if "bias_hh" in n][-1]
    named[frozen].requires_grad = False
    opt = optim.Adam(model.parameters(), lr=0.02)
    assert opt.flat is not None and len(opt.flat) == len(named)
    losses = []
    for k in range(n_steps):
        with grad.reference_mode(reference):
            out = lm_train_step(model, opt, pad_batch(TGT[k % 2::2] + TGT[:1]), cfg, scale=8.0)
        assert "problem" not in out
        losses.append(out["loss"])
    assert named[frozen].grad is None and opt.state[list(named).index(frozen)] == {}
    return losses, {n: _host(p.data) for n, p in model.named_parameters()}, opt


def test_three_flat_adam_steps_with_a_tied_and_a_frozen_weight_equal_the_reference():
    fast_losses, fast, opt = _lm_steps_flat(False)
    ref_losses, ref, _ = _lm_steps_flat(True)
    assert all(p.data is view for p, view in zip(opt.flat.params, opt.flat.views))
    np.testing.assert_allclose(fast_losses, ref_losses, rtol=0, atol=1e-10)
    for name in fast:
        np.testing.assert_allclose(fast[name], ref[name], rtol=0, atol=1e-10, err_msg=name)


def _entered_during(fn):
    """``{(file, function name)}`` of every Python function entered while ``fn()`` runs, with
    the code objects, traced by ``sys.setprofile``."""
    seen = {}

    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            seen[code] = (code.co_filename, code.co_name)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


def _codes_within(code):
    """``code`` and every function defined inside it (its backward closures), recursively."""
    out = {code}
    for const in code.co_consts:
        if inspect.iscode(const):
            out |= _codes_within(const)
    return out


def test_a_reference_mode_step_enters_no_fused_function_and_no_accumulation_bookkeeping():
    """One whole seq2seq ``train_step`` (forward, loss, backward, clipping, Adam) in reference
    mode enters no function of ``grad.modes.fused_functions()`` (nor a backward defined inside
    one), and of ``grad/accumulate.py`` at most ``accumulate_reference``, the plain dense sum."""
    modes = pytest.importorskip("grad.modes")
    if not hasattr(modes, "fused_functions"):
        pytest.skip("grad.modes.fused_functions (the fused-function registry of issue 15, item 1, "
                    "helper i15a) is not on this branch yet")
    fused = {}
    for f in modes.fused_functions():
        for code in _codes_within(inspect.unwrap(f).__code__):
            fused[code] = f.__name__
    assert fused, "the registry is empty"
    entered = _entered_during(lambda: _seq2seq_step(True, 1.0))
    hit = sorted({name for code, name in fused.items() if code in entered})
    assert not hit, f"reference mode entered fused fast functions: {hit}"
    accumulate = {name for file, name in entered.values()
                  if Path(file).parts[-2:] == ("grad", "accumulate.py")}
    assert accumulate <= {"accumulate_reference"}, \
        f"reference mode entered accumulation bookkeeping: {sorted(accumulate)}"
    # ...and the same trace on the fast path does enter fused functions (the check can fail).
    fast = _entered_during(lambda: _seq2seq_step(False, 1.0))
    assert {"lstm_layer", "lstm_step", "attention_lookup", "cross_entropy"} <= {
        name for code, name in fused.items() if code in fast}


def test_the_reference_step_takes_the_readable_decoder_path():
    """On this branch already: the decoder's readable step (input feeding as a concatenation,
    ``nn.LSTM.cell``) and the composed attention run in reference mode, the fast ones do not."""
    entered = {name for _, name in _entered_during(lambda: _seq2seq_step(True, 1.0)).values()}
    assert {"_lstm_readable", "cell"} <= entered
    assert "_lstm_fast" not in entered and "attention_lookup" not in entered
    fast = {name for _, name in _entered_during(lambda: _seq2seq_step(False, 1.0)).values()}
    assert "_lstm_fast" in fast and "attention_lookup" in fast and "_lstm_readable" not in fast


# ----------------------------------------------------------------------------- the command line
def test_train_with_reference_and_float64_then_resume_in_fast_mode(tmp_path, monkeypatch, capsys):
    """``--dtype float64`` is a setting of the run (config.json, float64 checkpoints, kept on
    resume, refused as a change on resume); ``--reference`` is how a process runs (recorded in
    log.jsonl, not a setting): the run resumes without it."""
    import json
    import minis2s
    from minis2s import cli
    from minis2s.checkpoint import load_checkpoint
    monkeypatch.chdir(tmp_path)
    small = ["train", "--task", "dates", "--n-train", "40", "--n-valid", "8", "--n-test", "8",
             "--emb-size", "8", "--hidden-size", "16", "--batch-size", "20", "--quiet"]
    assert cli.main([*small, "--epochs", "1", "--dtype", "float64", "--reference", "--out", "run"]) == 0
    assert "reference mode" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["dtype"] == "float64"
    ckpt = load_checkpoint(tmp_path / "run" / "last.npz")
    assert {a.dtype for a in ckpt["model"].values()} == {np.dtype("float64")}
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["reference_mode"] is True
    assert cli.main(["train", "--resume", "run", "--epochs", "2", "--quiet"]) == 0
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and "reference_mode" not in log[1]
    ckpt = load_checkpoint(tmp_path / "run" / "last.npz")
    assert {a.dtype for a in ckpt["model"].values()} == {np.dtype("float64")}
    capsys.readouterr()
    assert cli.main(["train", "--resume", "run", "--epochs", "3", "--dtype", "float32"]) == 2
    assert "not --dtype" in capsys.readouterr().err
    translator = minis2s.load(tmp_path / "run")              # decodes in the run's dtype
    assert {str(p.dtype) for p in translator.model.parameters()} == {"float64"}
    (tmp_path / "in.txt").write_text("1 Jan 2000\n", encoding="utf-8")
    assert cli.main(["translate", "--model", "run", "--input", "in.txt"]) == 0
    assert capsys.readouterr().out.count("\n") == 1               # one translation line


def test_lm_train_with_reference_and_float64_then_resume_in_fast_mode(tmp_path, monkeypatch):
    import json
    from minis2s import cli
    from minis2s.checkpoint import load_checkpoint
    monkeypatch.chdir(tmp_path)
    lm = ["lm", "train", "--builtin", "markov", "--model", "lstm", "--emb-size", "8",
          "--hidden-size", "8", "--batch-size", "128", "--quiet"]
    assert cli.main([*lm, "--epochs", "1", "--dtype", "float64", "--reference", "--out", "run"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["dtype"] == "float64"
    assert cli.main(["lm", "train", "--resume", "run", "--epochs", "2", "--quiet"]) == 0
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r.get("reference_mode") for r in log] == [True, None]
    ckpt = load_checkpoint(tmp_path / "run" / "last.npz")
    assert {a.dtype for a in ckpt["model"].values()} == {np.dtype("float64")}
    from minis2s.lm.training import load_lm
    loaded = load_lm(tmp_path / "run")
    assert {str(p.dtype) for p in loaded.model.parameters()} == {"float64"}
    assert len(loaded.generate(2, max_len=5)) == 2
