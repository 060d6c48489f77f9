"""The training procedure: exact resume, best/last checkpoints, early stopping, NaN handling."""
import json
import math
import signal

import numpy as np
import pytest

import minis2s
from grad import backend as B
from grad.tensor import no_grad
from minis2s.checkpoint import load_checkpoint
from minis2s.train import TrainConfig, TrainingError, fit

TINY = dict(task="dates", n_train=200, n_valid=30, n_test=30, emb_size=8, hidden_size=16,
            batch_size=32, dropout=0.3, quiet=True, valid_decode_limit=10)
BATCHES_PER_EPOCH = 7                     # 200 pairs in batches of 32


def _weights(path):
    return load_checkpoint(path)["model"]


def _same_checkpoint(a, b):
    """Weights, optimizer state and trainer state (position, best score, generators) equal."""
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        np.testing.assert_array_equal(ca["model"][k], cb["model"][k], err_msg=k)
    assert ca["trainer"] == cb["trainer"]
    for sa, sb in zip(ca["optimizer"]["state"], cb["optimizer"]["state"], strict=True):
        assert sa.keys() == sb.keys()
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def _log(run_dir):
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


def _one_sentence_at_a_time(model, src_ids, tgt_ids):
    """Summed ``-log P`` of every predicted target token (EOS in, BOS out), the number of those
    tokens and how many the argmax gets right, from the model's logits of each sentence run
    alone (no padding), with the log-softmax taken here in float64."""
    nll, count, correct = 0.0, 0, 0
    model.eval()
    with no_grad():
        for src, tgt in zip(src_ids, tgt_ids):
            tout = np.array(tgt[1:])
            logits = model.logits(np.array([src]), np.array([len(src)]), np.array([tgt[:-1]]))
            z = logits.numpy()[0].astype(np.float64)                       # (T, V)
            top = z.max(axis=1, keepdims=True)
            log_p = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
            nll -= log_p[np.arange(len(tout)), tout].sum()
            count += len(tout)
            correct += int((z.argmax(axis=1) == tout).sum())
    return nll, count, correct


def _model_for(prep, dtype="float32"):
    from minis2s.train import build_model
    return build_model(dict(src_vocab_size=len(prep.src_vocab), tgt_vocab_size=len(prep.tgt_vocab),
                            emb_size=8, hidden_size=16, num_layers=1, dropout=0.3, pad_idx=0,
                            attention="general", input_feeding=True), seed=0).to(dtype)


def test_a_run_resumed_after_2_epochs_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    full = fit(TrainConfig(out=str(tmp_path / "full"), epochs=4, **TINY), log=lambda m: None)
    fit(TrainConfig(out=str(tmp_path / "half"), epochs=2, **TINY), log=lambda m: None)
    resumed = fit(TrainConfig(epochs=4, quiet=True), resume=str(tmp_path / "half"), log=lambda m: None)
    a, b = _weights(tmp_path / "full" / "last.npz"), _weights(tmp_path / "half" / "last.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    log_a = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "half" / "log.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in log_a] == [r["train_loss"] for r in log_b]
    assert resumed["test"] == full["test"]
    # The test figures, recomputed another way from the best checkpoint: per-token NLL of each
    # sentence alone, and exact match of the translator's greedy output against the references.
    from minis2s.runs import prepare_data
    prep = prepare_data(TrainConfig(**TINY))
    translator = minis2s.load(tmp_path / "full")
    nll, count, correct = _one_sentence_at_a_time(translator.model, *prep.ids["test"])
    # (float32 logits from another batch shape: an argmax near-tie may fall the other way, so
    # one token or sentence of slack; a wrong count or denominator is off by far more)
    assert full["test"]["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert full["test"]["token_acc"] == pytest.approx(correct / count, abs=1.01 / count)
    sources, references = zip(*prep.pairs["test"])
    hyps = translator.translate(list(sources), beam_size=1)
    exact = sum(h == r for h, r in zip(hyps, references))
    assert full["test"]["exact_match"] == pytest.approx(exact / len(hyps), abs=1.01 / len(hyps))
    assert full["test"]["decoded"] == len(hyps) == 30


def _teacher_forced_log_p(translator, source, tokens, finished):
    """``log P(tokens [EOS] | source)`` under the translator's model, teacher-forced, with the
    source and target encoded here from the run's vocabularies; EOS is scored when the
    hypothesis ``finished`` (a search stopped by its length limit has none)."""
    src = translator.src_vocab.encode(translator.src_tokenizer.tokenize(source)) + [2]   # + EOS
    tgt = translator.tgt_vocab.encode(tokens) + ([2] if finished else [])
    tin, tout = np.array([[1] + tgt[:-1]]), np.array(tgt)                   # BOS y1 ..., y1 ...
    with no_grad():
        log_probs = translator.model(np.array([src]), np.array([len(src)]), tin).numpy()[0]
    return float(log_probs[np.arange(len(tout)), tout].astype(np.float64).sum())


def test_best_checkpoint_and_load_translate(tmp_path):
    fit(TrainConfig(out=str(tmp_path / "run"), epochs=3, **TINY), log=lambda m: None)
    # best.npz holds the epoch with the lowest validation loss (not the first, here).
    valid = [r["valid_loss"] for r in _log(tmp_path / "run")]
    best = load_checkpoint(tmp_path / "run" / "best.npz")["trainer"]
    assert best["epoch"] == int(np.argmin(valid)) + 1 > 1
    assert best["best"] == min(valid)
    model = minis2s.load(tmp_path / "run")
    sources = ["23 Nov 2026", "2026년 1월 5일"]
    limit = 14                                          # "YYYY-MM-DD" and EOS fit in 11 steps
    out = model.translate(sources, beam_size=3, max_output_length=limit)
    detailed = model.translate(sources, beam_size=3, max_output_length=limit, return_details=True)
    assert out == [d.text for d in detailed] and len(out) == 2
    for source, d in zip(sources, detailed):            # length_penalty 0: the score is log P
        assert d.text == model.tgt_tokenizer.detokenize(d.tokens)
        expected = _teacher_forced_log_p(model, source, d.tokens, len(d.tokens) < limit)
        assert d.score == pytest.approx(expected, rel=1e-5)
    detailed = model.translate(["1 Jan 2000"], beam_size=2, n_best=2, max_output_length=limit,
                               return_details=True)
    assert len(detailed[0]) == 2 and detailed[0][0].score >= detailed[0][1].score
    assert detailed[0][0].tokens != detailed[0][1].tokens
    for d in detailed[0]:
        expected = _teacher_forced_log_p(model, "1 Jan 2000", d.tokens, len(d.tokens) < limit)
        assert d.score == pytest.approx(expected, rel=1e-5)
    best_tokens = detailed[0][0].tokens
    att = detailed[0][0].attention                      # a row per output step, EOS included
    assert att.shape == (len(best_tokens) + (len(best_tokens) < limit), len("1 Jan 2000") + 1)
    np.testing.assert_allclose(att.sum(axis=1), 1.0, rtol=1e-5)


def test_early_stopping_stops_before_the_last_epoch(tmp_path):
    logs = []
    fit(TrainConfig(out=str(tmp_path / "run"), epochs=30, patience=1, lr=1e-9, **TINY), log=logs.append)
    assert any("early stopping" in m for m in logs)
    n_epochs = len((tmp_path / "run" / "log.jsonl").read_text().splitlines())
    assert n_epochs < 30


def test_a_nan_loss_stops_with_epoch_and_iteration_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fit(TrainConfig(out=str(run), epochs=1, **TINY), log=lambda m: None)
    before = (run / "last.npz").read_bytes()
    import minis2s.models.seq2seq as s2s
    real_loss = s2s.Seq2Seq.loss
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        out = real_loss(self, *args, **kwargs)
        return out * float("nan") if calls["n"] == 3 else out
    monkeypatch.setattr(s2s.Seq2Seq, "loss", poisoned)
    with pytest.raises(TrainingError, match=r"epoch 2, iteration 10;"):
        fit(TrainConfig(epochs=3, quiet=True), resume=str(run), log=lambda m: None)
    assert (run / "last.npz").read_bytes() == before
    calls["n"] = 0
    monkeypatch.setattr(s2s.Seq2Seq, "loss", poisoned)
    skip = dict(TINY, nan_policy="skip")
    fit(TrainConfig(out=str(tmp_path / "skip"), epochs=1, **skip), log=lambda m: None)
    record = json.loads((tmp_path / "skip" / "log.jsonl").read_text().splitlines()[0])
    assert record["skipped_batches"] == 1


def test_learning_rate_halves_every_epoch_from_lr_decay_start_with_sgd(tmp_path):
    from minis2s.train import _lr_for_epoch
    cfg = TrainConfig(lr=0.4, lr_decay_start=2)
    assert [_lr_for_epoch(cfg, e) for e in (1, 2, 3, 4)] == [0.4, 0.2, 0.1, 0.05]
    assert _lr_for_epoch(TrainConfig(lr=0.4), 9) == 0.4             # no schedule: constant
    fit(TrainConfig(out=str(tmp_path / "sgd"), epochs=3, optimizer="sgd", lr=0.4,
                    lr_decay_start=2, **TINY), log=lambda m: None)
    log = [json.loads(x) for x in (tmp_path / "sgd" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log] == [0.4, 0.2, 0.1]
    assert log[-1]["train_loss"] < log[0]["train_loss"]              # SGD does train


def test_the_evaluator_is_an_engine_whose_sums_equal_the_teacher_forced_loss(tmp_path):
    import grad
    from minis2s.data.batching import collate
    from minis2s.engine import Engine
    from minis2s.runs import prepare_data
    from minis2s.train import build_model, make_evaluator, to_device
    cfg = TrainConfig(**TINY)
    prep = prepare_data(cfg)
    model = build_model(dict(src_vocab_size=len(prep.src_vocab), tgt_vocab_size=len(prep.tgt_vocab),
                             emb_size=8, hidden_size=16, num_layers=1, dropout=0.0, pad_idx=0,
                             attention="general", input_feeding=True), seed=0)
    src_ids, tgt_ids = prep.ids["valid"]
    batches = [collate(src_ids, tgt_ids, range(i, min(i + 8, len(src_ids)))) for i in range(0, len(src_ids), 8)]
    evaluator = make_evaluator(model)
    assert isinstance(evaluator, Engine)
    with grad.no_grad():
        sums = evaluator.run(batches, max_epochs=1).metrics
        expected = sum(model.loss(*to_device(b), reduction="sum").item() for b in batches)
    assert sums["tokens"] == sum(b.n_tokens for b in batches)
    assert sums["nll"] == pytest.approx(expected, rel=1e-6)
    assert 0 <= sums["correct"] <= sums["tokens"]


def test_resume_trims_log_lines_written_after_the_checkpoint_mid_epoch_or_cut_short(tmp_path):
    from minis2s.train import _trim_log
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"epoch": e, "iteration": 10 * e}) + "\n" for e in (1, 2, 3))
                   + '{"epoch": 4, "itera', encoding="utf-8")
    _trim_log(log, 25)            # a Ctrl-C checkpoint in the middle of epoch 3 (iteration 25)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [1, 2]


# ----------------------------------------------------------------------------- wiring
def test_evaluation_loss_is_the_token_nll_summed_independently_over_the_counted_tokens():
    """On a split of mixed target lengths, in batches with padding: the evaluation's
    cross-entropy is the summed per-token NLL over the number of predicted tokens (not
    sentences), and token accuracy the argmax hits over the same count."""
    from minis2s.runs import prepare_data
    from minis2s.train import evaluate
    prep = prepare_data(TrainConfig(**dict(TINY, task="reverse")))
    src_ids, tgt_ids = prep.ids["valid"]
    assert len({len(t) for t in tgt_ids}) > 3
    model = _model_for(prep, "float64")
    nll, count, correct = _one_sentence_at_a_time(model, src_ids, tgt_ids)
    assert count == sum(len(t) - 1 for t in tgt_ids) > 2 * len(tgt_ids)
    metrics = evaluate(model, prep, "valid", batch_size=8, decode_limit=0)
    assert metrics["loss"] == pytest.approx(nll / count, rel=1e-10)
    assert metrics["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-10)
    assert metrics["token_acc"] == correct / count


def _record_training_forward(monkeypatch, events):
    """Make ``fit`` build models whose decoder reports, in training mode, the token ids its
    embedding is fed and the per-step logits its generator produces."""
    import minis2s.train as train_module
    real_build = train_module.build_model

    def build(model_cfg, seed, *dtype):
        model = real_build(model_cfg, seed, *dtype)
        embedding, generator = model.decoder.embedding, model.decoder.output_layer
        embed, generate = embedding.forward, generator.forward

        def fed(ids):
            if model.training:
                events.append(("ids", B.to_numpy(ids.data)))
            return embed(ids)

        def produced(x):
            y = generate(x)
            if model.training and x.ndim == 2:                    # one step (B, H) -> (B, V)
                events.append(("logits", B.to_numpy(y.data)))
            return y
        embedding.forward, generator.forward = fed, produced
        return model
    monkeypatch.setattr(train_module, "build_model", build)


def test_tf_ratio_reaches_training_and_about_half_the_steps_feed_the_models_own_prediction(
        tmp_path, monkeypatch):
    """``TrainConfig.tf_ratio = 0.5``: at each decoder step t >= 1 of training, each sentence is
    fed either the reference token or the model's own previous argmax (over the tokens other
    than PAD and BOS), each about half the time where the two differ; with 1.0, the reference
    only, and the trained weights differ."""
    events = []
    _record_training_forward(monkeypatch, events)
    fit(TrainConfig(out=str(tmp_path / "half"), epochs=2, tf_ratio=0.5, **TINY), log=lambda m: None)
    reference = logits = None
    step = own = fed_reference = steps = 0
    for kind, array in events:
        if kind == "logits":
            logits = array
        elif array.ndim == 2:                                     # a batch's teacher-forced input
            reference, logits, step = array, None, 0
        else:                                                     # the tokens fed at one step
            step += 1
            predicted = np.argmax(np.where(np.arange(logits.shape[1]) < 2, -np.inf, logits), axis=1)
            truth = reference[:, step]
            assert np.all((array == predicted) | (array == truth))
            differ = predicted != truth
            own += int((array == predicted)[differ].sum())
            fed_reference += int((array == truth)[differ].sum())
            steps += int(differ.sum())
    assert steps > 1000 and own + fed_reference == steps
    assert abs(own / steps - 0.5) < 0.05, (own, steps)

    events.clear()
    fit(TrainConfig(out=str(tmp_path / "full"), epochs=2, tf_ratio=1.0, **TINY), log=lambda m: None)
    assert events and all(array.ndim == 2 for kind, array in events if kind == "ids")
    a, b = _weights(tmp_path / "half" / "last.npz"), _weights(tmp_path / "full" / "last.npz")
    assert any(not np.array_equal(a[k], b[k]) for k in a)


def test_a_run_interrupted_mid_epoch_with_tf_ratio_below_one_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Ctrl-C (SIGINT) in the middle of epoch 2 saves a mid-epoch checkpoint; resuming it ends
    exactly where the uninterrupted run ends: the teacher-forcing draws continue where they
    stopped (as do the dropout draws, the batch order and the optimizer)."""
    import minis2s.models.seq2seq as s2s
    cfg = dict(TINY, tf_ratio=0.5, epochs=2)
    fit(TrainConfig(out=str(tmp_path / "full"), **cfg), log=lambda m: None)
    real_loss = s2s.Seq2Seq.loss
    calls = {"n": 0}

    def interrupted_at_step_10(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == BATCHES_PER_EPOCH + 3:
            signal.raise_signal(signal.SIGINT)                    # what Ctrl-C sends
        return real_loss(self, *args, **kwargs)
    monkeypatch.setattr(s2s.Seq2Seq, "loss", interrupted_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        fit(TrainConfig(out=str(tmp_path / "run"), **cfg), log=lambda m: None)
    monkeypatch.setattr(s2s.Seq2Seq, "loss", real_loss)
    state = load_checkpoint(tmp_path / "run" / "last.npz")["trainer"]
    assert (state["epoch"], state["iteration"], state["iteration_in_epoch"]) == (2, BATCHES_PER_EPOCH + 3, 3)
    fit(TrainConfig(epochs=2, quiet=True), resume=str(tmp_path / "run"), log=lambda m: None)
    _same_checkpoint(tmp_path / "full" / "last.npz", tmp_path / "run" / "last.npz")
    without_time = [[{k: v for k, v in r.items() if k != "time"} for r in _log(tmp_path / d)]
                    for d in ("full", "run")]
    assert without_time[0] == without_time[1] and len(without_time[0]) == 2


def test_the_logged_training_loss_is_the_per_token_mean_of_the_epoch(tmp_path, monkeypatch):
    import minis2s.models.seq2seq as s2s
    real_loss = s2s.Seq2Seq.loss
    batches = []

    def recording(self, src, src_lengths, tgt_in, tgt_out, **kwargs):
        total = real_loss(self, src, src_lengths, tgt_in, tgt_out, **kwargs)
        if self.training:
            assert kwargs.get("reduction") == "sum"
            batches.append((total.item(), int((B.to_numpy(tgt_out.data) != 0).sum())))
        return total
    monkeypatch.setattr(s2s.Seq2Seq, "loss", recording)
    fit(TrainConfig(out=str(tmp_path / "run"), epochs=2, **TINY), log=lambda m: None)
    assert len(batches) == 2 * BATCHES_PER_EPOCH
    for record, epoch in zip(_log(tmp_path / "run"), (batches[:BATCHES_PER_EPOCH], batches[BATCHES_PER_EPOCH:])):
        mean = sum(t for t, _ in epoch) / sum(n for _, n in epoch)
        assert record["train_loss"] == pytest.approx(mean, rel=1e-6)      # float32 batch means
        assert record["train_ppl"] == pytest.approx(math.exp(mean), rel=1e-6)
