"""Plots (issue 16): rendered on tiny runs, and their properties checked on the returned Figure
(tick values, label rotation, colour bar, titles), not only that a file was written."""
import json
import re
import warnings

import numpy as np
import pytest

from test_everyday import TINY, run

pytest.importorskip("matplotlib")


def _tick_texts(labels):
    return [t.get_text() for t in labels if t.get_text()]


def test_training_curves_have_whole_epochs_plain_labels_and_a_validation_panel(tmp_path):
    from minis2s.plot import plot_run
    r = run(["train", "--task", "reverse", "--epochs", "3", "--out", "run", *TINY], tmp_path)
    assert r.returncode == 0, r.stderr
    fig = plot_run(tmp_path / "run", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    loss, scores = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][:2]
    for ax in (loss, scores):
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        fig.canvas.draw()
        for text in _tick_texts(ax.get_xticklabels()) + _tick_texts(ax.get_yticklabels()):
            assert re.fullmatch(r"[−-]?\d+(\.\d+)?", text), text          # no 1.3x10^0, no offsets
    assert [line.get_label() for line in loss.get_lines()] == ["train", "valid"]
    assert [line.get_label() for line in scores.get_lines()] == ["exact match", "token accuracy", "BLEU"]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert list(scores.get_lines()[2].get_ydata()) == [rec["valid_bleu"] for rec in log]
    assert "greedy" in scores.get_title()
    assert [ax.get_ylabel() for ax in loss.child_axes] == ["perplexity"]  # the right-hand axis


def test_an_lstm_lm_run_has_a_curve_and_an_ngram_run_says_it_has_none(tmp_path):
    from minis2s.plot import PlotError, plot_run
    (tmp_path / "c.txt").write_text("\n".join(["the cat sat", "a dog ran"] * 20) + "\n", encoding="utf-8")
    r = run(["lm", "train", "--corpus", "c.txt", "--model", "lstm", "--epochs", "2", "--hidden-size",
             "8", "--emb-size", "8", "--min-freq", "1", "--out", "lstm", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    fig = plot_run(tmp_path / "lstm", tmp_path / "lm.png")
    ax = fig.axes[0]
    log = [json.loads(line) for line in (tmp_path / "lstm" / "log.jsonl").read_text().splitlines()]
    assert [line.get_label() for line in ax.get_lines()] == ["train", "valid"]
    assert list(ax.get_lines()[1].get_xdata()) == [1, 2]
    assert list(ax.get_lines()[1].get_ydata()) == [rec["valid_loss"] for rec in log]
    assert "LSTM language model" in fig._suptitle.get_text()
    r = run(["lm", "train", "--corpus", "c.txt", "--model", "ngram", "--out", "ng"], tmp_path)
    assert r.returncode == 0, r.stderr
    with pytest.raises(PlotError, match="n-gram language model.*no training curve"):
        plot_run(tmp_path / "ng", tmp_path / "ng.png")
    r = run(["plot", "--run", "ng", "--out", "ng.png"], tmp_path)
    assert r.returncode == 2 and "has no training curve" in r.stderr
    assert "Traceback" not in r.stderr


def test_attention_heatmap_keeps_short_labels_upright_with_a_colour_bar_and_a_title(tmp_path):
    from minis2s.plot import SPACE, plot_attention
    src, out = list("1 Jan") + ["</s>"], list("01") + ["</s>"]
    weights = np.random.default_rng(0).dirichlet(np.ones(len(src)), size=len(out))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # a missing glyph is a warning
        fig = plot_attention(src, out, weights, tmp_path / "att.png", title="1 Jan")
    ax, bar = fig.axes
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels] == ["1", SPACE, "J", "a", "n", "</s>"]
    assert {t.get_rotation() for t in labels if len(t.get_text()) <= 2} == {0.0}
    assert {t.get_rotation() for t in labels if len(t.get_text()) > 2} == {90.0}    # "</s>"
    assert bar.get_ylabel() == "attention weight"
    assert ax.get_title() == "1 Jan"
    fig = plot_attention(["alpha", "beta"], ["x"], np.array([[0.3, 0.7]]), tmp_path / "w.png")
    assert {t.get_rotation() for t in fig.axes[0].get_xticklabels()} == {90.0}


def test_translate_plot_attention_without_a_cjk_font_still_succeeds(tmp_path, monkeypatch, capsys):
    r = run(["train", "--task", "dates", "--epochs", "1", "--out", "ko", *TINY], tmp_path)
    assert r.returncode == 0, r.stderr
    from minis2s import cli, plot
    monkeypatch.setattr(plot, "_cjk_font", lambda: None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("2026년 11월 24일\n", encoding="utf-8")
    code = cli.main(["translate", "--model", "ko", "--input", "in.txt", "--beam-size", "1",
                     "--plot-attention", "att.png", "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 0
    assert len(captured.out.splitlines()) == 1                     # the translation was written
    assert "minis2s: warning: no attention plot:" in captured.err and "fonts-noto-cjk" in captured.err
    assert not (tmp_path / "att.png").exists()
