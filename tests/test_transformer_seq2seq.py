"""The Transformer seq2seq model (minis2s/models/transformer.py) and ``minis2s train --arch
transformer``: the decoder-step interface with its key/value cache against full recomputation,
beam reordering of the state, PAD and causal masking, the parameter count, the options each
architecture refuses, the warm-up schedule, and a Transformer run that trains, resumes,
translates, evaluates and plots like an LSTM run.
"""
import contextlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

import grad
from grad import backend as B
from grad.tensor import Tensor, no_grad
from helpers import backends
from minis2s import cli
from minis2s.checkpoint import load_checkpoint
from minis2s.models.transformer import TransformerSeq2Seq, transformer_seq2seq_params
from minis2s.train import TrainConfig, fit, inverse_sqrt_lr

ROOT = Path(__file__).resolve().parents[1]

BOS, EOS, PAD = 1, 2, 0


def small_model(dtype="float32", norm_first=False, positions="sinusoidal", **kw):
    cfg = dict(d_model=16, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
               dim_feedforward=24, dropout=0.1, norm_first=norm_first, positions=positions)
    cfg.update(kw)
    model = TransformerSeq2Seq(11, 13, generator=grad.Generator(3), **cfg)
    if dtype == "float64":
        model.double()
    return model.eval()


def sources():
    """Three source rows of different lengths (EOS, then PAD)."""
    return np.array([[5, 6, 7, 8, 9, EOS], [4, 10, 6, EOS, PAD, PAD], [7, 7, EOS, PAD, PAD, PAD]])


def greedy_steps(model, src, n_steps):
    """A tiny greedy loop over the decoder-step interface: tokens ``(N, n_steps)`` (PAD and BOS
    never chosen, no stop at EOS) and the summed log-probabilities of the chosen tokens."""
    with no_grad():
        state = model.init_decoding(src, None)
        y = np.full(src.shape[0], BOS)
        tokens, score = [], np.zeros(src.shape[0])
        for _ in range(n_steps):
            log_probs, state, attention = model.decode_step(Tensor(B.asarray(y, "int64")), state)
            lp = B.to_numpy(log_probs.data).astype(np.float64)
            assert attention.shape == (src.shape[0], src.shape[1])
            lp[:, [PAD, BOS]] = -np.inf
            y = lp.argmax(axis=1)
            score += lp[np.arange(len(y)), y]
            tokens.append(y)
    return np.stack(tokens, axis=1), score


def full_pass(model, src, tokens):
    """Log-probabilities ``(N, T, V)`` of the whole target read at once (the training path)."""
    tgt_in = np.concatenate([np.full((len(tokens), 1), BOS), tokens[:, :-1]], axis=1)
    with no_grad():
        return B.to_numpy(model(src, None, tgt_in).data).astype(np.float64)


@backends
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float64", 1e-12)])
@pytest.mark.parametrize("norm_first, positions", [(False, "sinusoidal"), (True, "learned")])
def test_cached_decoding_equals_full_recomputation(backend, dtype, tol, norm_first, positions):
    with B.use(backend):
        model = small_model(dtype, norm_first, positions)
        src = sources()
        tokens, score = greedy_steps(model, src, 8)
        log_probs = full_pass(model, src, tokens)
        masked = log_probs.copy()
        masked[..., [PAD, BOS]] = -np.inf
        assert (masked.argmax(axis=-1) == tokens).all()                 # the same tokens
        full_score = np.take_along_axis(log_probs, tokens[..., None], axis=2)[..., 0].sum(axis=1)
        assert np.abs(full_score - score).max() <= tol * max(1.0, np.abs(score).max())


@backends
def test_cross_attention_weights_of_the_steps_equal_the_full_pass(backend):
    with B.use(backend):
        model = small_model("float64")
        src = sources()
        tokens, _ = greedy_steps(model, src, 5)
        tgt_in = np.concatenate([np.full((3, 1), BOS), tokens[:, :-1]], axis=1)
        weights = model.cross_attention(src, None, tgt_in)               # (N, L, h, T, S)
        assert weights.shape == (3, 2, 4, 5, 6)
        assert np.allclose(weights.sum(axis=-1), 1.0)
        assert (weights[1, ..., 4:] == 0).all() and (weights[2, ..., 3:] == 0).all()   # PAD
        # The last layer's heads, from the layer itself on the whole target at once.
        with no_grad():
            memory, pad_mask = model.encode(src)
            x = model.positions(model.tgt_embedding(Tensor(B.asarray(tgt_in, "int64")))
                                * math.sqrt(16))
            for layer in model.decoder.layers[:-1]:
                x = layer(x, memory, tgt_is_causal=True, memory_key_padding_mask=Tensor(pad_mask))
            last = model.decoder.layers[-1]
            h = last.norm1(x + last._sa_block(x, None, None, True))
            _, w = last.multihead_attn(h, memory, memory, key_padding_mask=Tensor(pad_mask),
                                       average_attn_weights=False)
        assert np.abs(B.to_numpy(w.data) - weights[:, -1]).max() < 1e-12


@backends
def test_reorder_gathers_every_sequence_of_the_state(backend):
    with B.use(backend):
        model = small_model("float64")
        src = sources()
        order = np.array([2, 0, 0, 1])                  # beams: expand and reorder rows
        with no_grad():
            state = model.init_decoding(src)
            y = np.array([BOS, BOS, BOS])
            for step in range(3):
                lp, state, _ = model.decode_step(Tensor(B.asarray(y, "int64")), state)
                y = np.array([4 + step, 5, 6])
            state = state.reorder(order)
            lp_a, _, att_a = model.decode_step(Tensor(B.asarray(y[order], "int64")), state)
            # the same rows decoded from the start as their own batch
            state_b = model.init_decoding(src[order])
            y_b = np.full(4, BOS)
            for step in range(3):
                model.decode_step(Tensor(B.asarray(y_b, "int64")), state_b)
                y_b = np.array([4 + step, 5, 6])[order]
            lp_b, _, att_b = model.decode_step(Tensor(B.asarray(y[order], "int64")), state_b)
        assert np.abs(B.to_numpy(lp_a.data) - B.to_numpy(lp_b.data)).max() < 1e-12
        assert np.abs(B.to_numpy(att_a.data) - B.to_numpy(att_b.data)).max() < 1e-12


def test_greedy_and_beam_search_run_on_the_transformer():
    model = small_model()
    src, lengths = sources(), np.array([6, 4, 3])
    g = model.greedy(src, lengths, max_len=6)
    tokens, score = greedy_steps(model, src, 6)
    for i in range(3):                      # greedy stops at EOS and pads after it
        row = list(tokens[i])
        end = row.index(EOS) + 1 if EOS in row else 6
        assert list(g.tokens[i, :end]) == row[:end]
        assert (g.tokens[i, end:] == PAD).all()
    assert g.attention.shape[0] == 3 and g.attention.shape[2] == 6
    b = model.beam_search(src, lengths, beam_size=1, max_len=6)
    assert (b.tokens[:, 0, :g.tokens.shape[1]] == g.tokens).all()       # beam 1 is greedy
    wide = model.beam_search(src, lengths, beam_size=4, n_best=2, length_penalty=0.6, max_len=6)
    assert wide.tokens.shape[:2] == (3, 2) and (np.diff(wide.scores, axis=1) <= 0).all()


def test_pad_is_masked_and_the_decoder_is_causal():
    model = small_model("float64")
    src = sources()
    tgt = np.array([[BOS, 4, 5, 6], [BOS, 7, PAD, PAD], [BOS, 8, 9, PAD]])
    with no_grad():
        base = B.to_numpy(model.logits(src, None, tgt).data)
        more_pad = np.concatenate([src, np.zeros((3, 2), dtype=src.dtype)], axis=1)
        assert np.abs(B.to_numpy(model.logits(more_pad, None, tgt).data) - base).max() < 1e-12
        later = tgt.copy()
        later[:, 3] = 10                                     # a later target token changes
        changed = B.to_numpy(model.logits(src, None, later).data)
    assert np.abs(changed[:, :3] - base[:, :3]).max() < 1e-12   # earlier positions do not see it
    tgt_out = np.array([[4, 5, 6, EOS], [7, EOS, PAD, PAD], [8, 9, EOS, PAD]])
    model.train()
    loss = model.loss(src, None, tgt, tgt_out, reduction="sum", label_smoothing=0.1)
    loss.backward()
    assert math.isfinite(loss.item())
    assert np.abs(B.to_numpy(model.tgt_embedding.weight.grad)[PAD]).max() == 0.0
    with pytest.raises(ValueError, match="teacher forcing only"):
        model.loss(src, None, tgt, tgt_out, tf_ratio=0.5)


@pytest.mark.parametrize("kw", [dict(), dict(positions="learned", max_positions=20),
                                dict(share_embeddings=True)])
def test_parameter_count_and_shared_embeddings(kw):
    vocab = 13 if kw.get("share_embeddings") else 11
    model = TransformerSeq2Seq(vocab, 13, d_model=16, nhead=2, num_encoder_layers=1,
                               num_decoder_layers=2, dim_feedforward=20, **kw)
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == len(set(names))
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == \
        transformer_seq2seq_params(**model.config)
    assert (model.src_embedding is model.tgt_embedding) == bool(kw.get("share_embeddings"))
    assert "decoder.layers.1.multihead_attn.in_proj_weight" in names and "decoder.norm.weight" in names
    with pytest.raises(ValueError, match="one vocabulary"):
        TransformerSeq2Seq(11, 13, d_model=16, nhead=2, share_embeddings=True)


def test_inverse_square_root_schedule():
    assert inverse_sqrt_lr(1e-3, 100, 1) == pytest.approx(1e-5)
    assert inverse_sqrt_lr(1e-3, 100, 50) == pytest.approx(5e-4)
    assert inverse_sqrt_lr(1e-3, 100, 100) == pytest.approx(1e-3)         # the peak
    assert inverse_sqrt_lr(1e-3, 100, 400) == pytest.approx(5e-4)


def test_train_config_fills_each_architectures_defaults():
    lstm, tr = TrainConfig(), TrainConfig(arch="transformer")
    assert (lstm.emb_size, lstm.lr, lstm.label_smoothing, lstm.heads) == (64, 2e-3, 0.0, None)
    assert (lstm.epochs, lstm.warmup_steps, lstm.select_metric) == (5, None, "loss")
    assert (tr.emb_size, tr.heads, tr.encoder_layers, tr.decoder_layers, tr.ff_size) == \
        (128, 4, 3, 3, 512)
    assert (tr.dropout, tr.label_smoothing, tr.positions) == (0.1, 0.1, "sinusoidal")
    assert (tr.lr, tr.warmup_steps, tr.epochs, tr.select_metric) == (2e-3, 150, 6, "bleu")
    assert TrainConfig(arch="transformer", epochs=2, lr=1e-3).epochs == 2   # given: kept
    assert TrainConfig(arch="transformer", select_metric="loss").select_metric == "loss"
    assert TrainConfig(select_metric="exact_match").select_metric == "exact_match"


def test_the_transformer_defaults_are_the_ones_the_readme_and_the_help_state(capsys):
    """The README's sentence on the Transformer's optimisation defaults and ``train --help``
    name the values ``ARCH_DEFAULTS`` holds, and the warm-up ends within the first epoch of the
    default dates run (20000 pairs in batches of 64)."""
    tr, lstm = TrainConfig(arch="transformer"), TrainConfig()
    assert tr.warmup_steps <= 20000 // tr.batch_size
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    peak = f"{tr.lr:.0e}".replace("e-0", "e-")                               # 2e-3
    metric = {"loss": "loss", "bleu": "BLEU", "exact_match": "exact match"}[tr.select_metric]
    assert (f"a peak learning rate of {peak} after {tr.warmup_steps} warm-up steps" in readme
            and f"for {tr.epochs} epochs (the LSTM: {lstm.epochs})" in readme
            and f"keeps the epoch with the best valid {metric} (the LSTM: the {lstm.select_metric};"
            in readme), \
        "README.md: the Transformer's defaults sentence differs from minis2s.train.ARCH_DEFAULTS"
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default: {lstm.epochs}; a Transformer: {tr.epochs};" in text
    assert f"the peak of its schedule, {tr.lr}" in text and f"(default: {tr.warmup_steps})" in text
    assert f"(default: {lstm.select_metric}; a Transformer: {tr.select_metric})" in text


@pytest.mark.parametrize("argv, named", [
    (["--arch", "transformer", "--no-input-feeding"], "--no-input-feeding"),
    (["--arch", "transformer", "--attention", "dot"], "--attention"),
    (["--arch", "transformer", "--emb-size", "64"], "--emb-size"),
    (["--arch", "transformer", "--tf-ratio", "0.5"], "--tf-ratio"),
    (["--arch", "transformer", "--layers", "2"], "--layers"),
    (["--arch", "transformer", "--heads", "3"], "divisible by --heads (3)"),
    (["--heads", "2", "--warmup-steps", "10"], "--heads, --warmup-steps only apply to a Transformer"),
    (["--share-embeddings"], "--share-embeddings"),
    (["--arch", "transformer", "--task", "dates", "--share-embeddings"], "one vocabulary"),
])
def test_options_of_the_other_architecture_are_refused_in_one_line(tmp_path, monkeypatch, capsys,
                                                                  argv, named):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", *argv, "--out", "run", "--n-train", "50", "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minis2s: error:") and named in lines[0], err


TINY = ["--arch", "transformer", "--task", "reverse", "--n-train", "120", "--n-valid", "20",
        "--n-test", "20", "--hidden-size", "16", "--heads", "2", "--encoder-layers", "1",
        "--decoder-layers", "1", "--ff-size", "32", "--warmup-steps", "4", "--batch-size", "32",
        "--share-embeddings", "--positions", "learned", "--threads", "1", "--quiet"]


def test_a_transformer_run_resumes_translates_evaluates_and_plots(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *TINY, "--epochs", "3", "--out", "ref"]) == 0
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", "run"]) == 0
    assert cli.main(["train", "--resume", "run", "--epochs", "3", "--quiet"]) == 0
    ref, got = load_checkpoint(tmp_path / "ref/last.npz"), load_checkpoint(tmp_path / "run/last.npz")
    assert ref["trainer"]["iteration"] == got["trainer"]["iteration"] == 12
    for name, value in ref["model"].items():              # resumed equals uninterrupted
        assert np.array_equal(value, got["model"][name]), name
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["model"]["arch"] == "transformer" and config["train"]["arch"] == "transformer"
    assert config["model"]["share_embeddings"] is True
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    peak = TrainConfig(arch="transformer").lr                              # the default --lr
    assert log[0]["lr"] == pytest.approx(peak * math.sqrt(4 / 4))          # step 4: the peak
    assert log[2]["lr"] == pytest.approx(peak * math.sqrt(4 / 12))
    (tmp_path / "in.txt").write_text("a b c\nd e\n")
    capsys.readouterr()
    assert cli.main(["translate", "--model", "run", "--input", "in.txt", "--beam-size", "3",
                     "--plot-attention", "one.png", "--threads", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert (tmp_path / "one.png").stat().st_size > 0
    assert cli.main(["translate", "--model", "run", "--input", "in.txt", "--beam-size", "1",
                     "--plot-attention", "grid.png", "--all-heads", "--threads", "1"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    (tmp_path / "data.tsv").write_text("a b c\tc b a\nd e\te d\n")
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", "run", "--data", "data.tsv", "--json",
                     "--threads", "1"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["sentences"] == 2 and 0.0 <= metrics["exact_match"] <= 1.0


def test_a_transformer_run_takes_its_default_epochs_and_metric_and_a_resume_keeps_the_runs_own(
        tmp_path, monkeypatch, capsys):
    """Without --epochs and --select-metric a Transformer run trains the Transformer's default
    number of epochs (6, not the LSTM's 5) and keeps the epoch of the best valid BLEU (not the
    LSTM's loss), both written to config.json; ``--resume`` keeps the total and the metric the
    run was started with, and its best score."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *TINY, "--n-train", "40", "--out", "dflt"]) == 0
    log = [json.loads(line) for line in (tmp_path / "dflt/log.jsonl").read_text().splitlines()]
    tr = TrainConfig(arch="transformer")
    assert len(log) == tr.epochs == 6
    config = json.loads((tmp_path / "dflt/config.json").read_text())["train"]
    assert (config["epochs"], config["select_metric"]) == (6, "bleu")
    bleu = [r["valid_bleu"] for r in log]
    best = load_checkpoint(tmp_path / "dflt/best.npz")["trainer"]
    # the best BLEU, a tie going to the lower valid loss (this tiny run's BLEU is 0 throughout)
    chosen = max(range(len(log)), key=lambda i: (bleu[i], -log[i]["valid_loss"]))
    assert best["best"] == max(bleu) and best["epoch"] == 1 + chosen
    assert best["best_loss"] == log[chosen]["valid_loss"]
    assert "* marks a new best valid BLEU" in capsys.readouterr().out

    assert cli.main(["train", *TINY, "--epochs", "1", "--select-metric", "exact_match",
                     "--out", "run"]) == 0
    assert cli.main(["train", "--resume", "run", "--quiet"]) == 0
    assert len((tmp_path / "run/log.jsonl").read_text().splitlines()) == 1
    assert load_checkpoint(tmp_path / "run/last.npz")["trainer"]["max_epochs"] == 1
    first = load_checkpoint(tmp_path / "run/last.npz")["trainer"]["best"]
    capsys.readouterr()
    assert cli.main(["train", "--resume", "run", "--epochs", "2", "--quiet"]) == 0
    assert "* marks a new best valid exact match" in capsys.readouterr().out
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    exact = [r["valid_exact_match"] for r in log]
    assert len(log) == 2 and first == exact[0]          # the saved best score, read on resume
    assert load_checkpoint(tmp_path / "run/last.npz")["trainer"]["best"] == max(exact)
    assert json.loads((tmp_path / "run/config.json").read_text())["train"]["select_metric"] == \
        "exact_match"


def test_plot_attention_layer_and_head_are_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", "run"]) == 0
    (tmp_path / "in.txt").write_text("a b c\n")
    capsys.readouterr()
    code = cli.main(["translate", "--model", "run", "--input", "in.txt", "--plot-attention",
                     "p.png", "--layer", "2", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--layer 2" in err and "1 decoder layer" in err, err
    assert not (tmp_path / "p.png").exists()
    assert cli.main(["translate", "--model", "run", "--input", "in.txt", "--plot-attention",
                     "p.png", "--layer", "1", "--head", "2", "--threads", "1"]) == 0
    assert (tmp_path / "p.png").exists()


def test_a_diverging_transformer_run_stops_with_the_guard(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", *TINY, "--epochs", "1", "--optimizer", "sgd", "--lr", "1e30",
                     "--warmup-steps", "1", "--out", "run"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "at epoch 1, iteration" in err and "try a lower --lr" in err


def test_fit_on_a_transformer_learns_something(tmp_path):
    cfg = TrainConfig(arch="transformer", task="reverse", n_train=120, n_valid=20, n_test=20,
                      hidden_size=16, heads=2, encoder_layers=1, decoder_layers=1, ff_size=32,
                      warmup_steps=4, batch_size=32, epochs=2, out=str(tmp_path / "r"),
                      quiet=True)
    result = fit(cfg, log=lambda m: None)
    log = [json.loads(line) for line in (tmp_path / "r/log.jsonl").read_text().splitlines()]
    assert log[1]["train_loss"] < log[0]["train_loss"]
    assert set(result) >= {"test", "test-long"}


@backends
def test_reference_mode_gives_the_same_loss_and_gradients(backend):
    """The whole model's training step with every fused function replaced by its composed
    reference (``grad.reference_mode()``): loss and every parameter gradient to 1e-10."""
    with B.use(backend):
        src = sources()
        tgt = np.array([[BOS, 4, 5, 6], [BOS, 7, PAD, PAD], [BOS, 8, 9, PAD]])
        tgt_out = np.array([[4, 5, 6, EOS], [7, EOS, PAD, PAD], [8, 9, EOS, PAD]])
        results = []
        for reference in (False, True):
            model = small_model("float64", dropout=0.0).train()
            with (grad.reference_mode() if reference else contextlib.nullcontext()):
                loss = model.loss(src, None, tgt, tgt_out, label_smoothing=0.1)
                loss.backward()
            results.append((loss.item(), {n: B.to_numpy(p.grad) for n, p in model.named_parameters()}))
        (fast, fast_grads), (ref, ref_grads) = results
        assert abs(fast - ref) < 1e-10
        for name, g in fast_grads.items():
            assert np.abs(g - ref_grads[name]).max() < 1e-10, name

