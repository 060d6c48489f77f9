"""The ``minis2s`` command, run for real in subprocesses on tiny data."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-train", "300", "--n-valid", "40", "--n-test", "40", "--emb-size", "8",
        "--hidden-size", "16", "--batch-size", "32", "--quiet"]


def run(args, cwd, input=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "minis2s", *args], cwd=cwd, input=input,
                          capture_output=True, text=True, timeout=timeout, env=env)


def per_token_figures(model_dir, pairs, checkpoint="best"):
    """Cross-entropy, token accuracy and the number of predicted tokens of a saved model on text
    pairs, computed here: each sentence alone (no padding), encoded from the run's vocabularies,
    with a float64 log-softmax of the model's logits; EOS counted, BOS not. (The model's float32
    logits from another batch shape may break an argmax near-tie the other way.)"""
    import numpy as np
    import minis2s
    from grad.tensor import no_grad
    t = minis2s.load(model_dir, checkpoint)
    nll, count, correct = 0.0, 0, 0
    with no_grad():
        for source, target in pairs:
            src = t.src_vocab.encode(t.src_tokenizer.tokenize(source)) + [2]          # ... EOS
            tgt = [1] + t.tgt_vocab.encode(t.tgt_tokenizer.tokenize(target)) + [2]    # BOS ... EOS
            tout = np.array(tgt[1:])
            z = t.model.logits(np.array([src]), np.array([len(src)]), np.array([tgt[:-1]]))
            z = z.numpy()[0].astype(np.float64)                                       # (T, V)
            top = z.max(axis=1, keepdims=True)
            log_p = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
            nll -= log_p[np.arange(len(tout)), tout].sum()
            count += len(tout)
            correct += int((z.argmax(axis=1) == tout).sum())
    return nll / count, correct / count, count


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny dates model shared by the tests below."""
    cwd = tmp_path_factory.mktemp("cli")
    r = run(["train", "--task", "dates", "--epochs", "2", "--out", "model", *TINY], cwd)
    assert r.returncode == 0, r.stderr
    return cwd, r


def test_train_prints_epochs_test_metrics_and_the_model_path(trained):
    cwd, r = trained
    assert "epoch  1" in r.stdout and "epoch  2" in r.stdout
    assert "test: exact match" in r.stdout
    assert "model saved in model" in r.stdout
    for name in ("config.json", "src_vocab.json", "tgt_vocab.json", "last.npz", "best.npz", "log.jsonl"):
        assert (cwd / "model" / name).is_file(), name
    log = [json.loads(line) for line in (cwd / "model" / "log.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in log] == [1, 2]
    for key in ("train_loss", "train_ppl", "valid_loss", "valid_ppl", "valid_token_acc",
                "valid_exact_match", "valid_bleu", "param_norm", "grad_norm", "time"):
        assert key in log[0]
    assert log[0]["valid_ppl"] == pytest.approx(2.718281828459045 ** log[0]["valid_loss"])
    # The last epoch's validation figures, recomputed from last.npz on the same split.
    from minis2s.data.tasks import make_task
    valid = make_task("dates", seed=0, n_train=300, n_valid=40, n_test=40)["valid"]
    ce, acc, count = per_token_figures(cwd / "model", valid, "last")
    assert log[-1]["valid_loss"] == pytest.approx(ce, rel=1e-5)
    assert log[-1]["valid_token_acc"] == pytest.approx(acc, abs=1.01 / count)   # one argmax near-tie


def test_translate_from_a_file_and_from_stdin_keeps_order(trained):
    cwd, _ = trained
    (cwd / "in.txt").write_text("23 Nov 2026\n2026년 1월 5일\nMonday, March 2, 1998\n", encoding="utf-8")
    from_file = run(["translate", "--model", "model", "--input", "in.txt", "--beam-size", "3"], cwd)
    assert from_file.returncode == 0, from_file.stderr
    lines = from_file.stdout.splitlines()
    assert len(lines) == 3
    from_stdin = run(["translate", "--model", "model", "--beam-size", "3"], cwd,
                     input=(cwd / "in.txt").read_text(encoding="utf-8"))
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout.splitlines() == lines
    assert "reading sentences" not in from_stdin.stderr      # stdin is not a terminal: no hint


def test_translate_n_best_prints_ranked_scores(trained):
    cwd, _ = trained
    r = run(["translate", "--model", "model", "--beam-size", "3", "--n-best", "2"], cwd, input="1 Jan 2000\n")
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines() if line]
    assert [row[0] for row in rows] == ["1", "2"]
    assert float(rows[0][1]) >= float(rows[1][1])


def test_evaluate_prints_all_metrics_as_json(trained):
    cwd, _ = trained
    r = run(["data", "--task", "dates", "--out", "data"], cwd)
    assert r.returncode == 0, r.stderr
    r = run(["evaluate", "--model", "model", "--data", "data/valid.tsv", "--json"], cwd, timeout=600)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert set(metrics) >= {"exact_match", "token_acc", "bleu", "cross_entropy", "ppl"}
    assert metrics["ppl"] == pytest.approx(2.718281828459045 ** metrics["cross_entropy"])
    from minis2s.data.parallel import read_tsv
    pairs = read_tsv(cwd / "data" / "valid.tsv").pairs
    ce, acc, count = per_token_figures(cwd / "model", pairs)
    assert metrics["sentences"] == len(pairs) > 100
    assert metrics["cross_entropy"] == pytest.approx(ce, rel=1e-5)
    assert metrics["token_acc"] == pytest.approx(acc, abs=1.01 / count)          # one argmax near-tie


def test_plot_writes_a_png(trained):
    pytest.importorskip("matplotlib")
    cwd, _ = trained
    r = run(["plot", "--run", "model", "--out", "curves.png"], cwd)
    assert r.returncode == 0, r.stderr
    assert (cwd / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run(["translate", "--model", "model", "--plot-attention", "att.png"], cwd, input="2 Feb 2002\n")
    assert r.returncode == 0, r.stderr
    assert (cwd / "att.png").read_bytes()[:4] == b"\x89PNG"


def test_tasks_lists_every_builtin_task(tmp_path):
    r = run(["tasks"], tmp_path)
    assert r.returncode == 0
    for name in ("dates", "reverse", "addition", "numbers", "numbers-ko"):
        assert name in r.stdout


def test_version(tmp_path):
    r = run(["--version"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("minis2s ")


@pytest.mark.parametrize("args,message", [
    (["train", "--hidden-size", "-4"], "positive integer"),
    (["train", "--hidden-size", "15"], "must be even"),
    (["train", "--task", "nope"], "invalid choice"),
    (["train", "--device", "tpu"], "invalid choice"),
    (["train", "--train", "missing.tsv", "--valid", "missing.tsv"], "missing.tsv: file not found"),
    (["train", "--task", "dates", "--train", "a.tsv", "--valid", "b.tsv"], "not both"),
    (["translate", "--model", "nowhere", "--beam-size", "2", "--n-best", "3"], "--n-best (3)"),
    (["translate", "--model", "nowhere"], "nowhere: model directory not found"),
    # contradictory options that would otherwise be silently ignored
    (["train", "--valid", "v.tsv"], "--valid FILE needs --train FILE"),
    (["train", "--test", "t.tsv"], "--test FILE needs --train FILE"),
    (["train", "--valid-src", "a", "--valid-tgt", "b"], "--valid-src needs --train-src"),
    (["train", "--train-src", "a", "--train-tgt", "b", "--valid-src", "c", "--valid-tgt", "d",
      "--test-src", "e"], "--test-src and --test-tgt go together"),
    (["train", "--train", "a.tsv", "--valid", "b.tsv", "--n-train", "5"], "only apply to a built-in task"),
    (["train", "--resume", ".", "--lr", "0.5", "--task", "reverse"], "not --task, --lr"),
])
def test_bad_arguments_are_one_line_errors_with_exit_code_2(tmp_path, args, message):
    r = run(args, tmp_path, input="")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minis2s: error:"), r.stderr   # argparse's too


def test_data_prints_the_paths_it_wrote(tmp_path):
    r = run(["data", "--task", "addition", "--out", "splits"], tmp_path)
    assert r.returncode == 0, r.stderr
    paths = r.stdout.split()
    assert [Path(p).name for p in paths] == ["train.tsv", "valid.tsv", "test.tsv"]
    assert all((tmp_path / p).is_file() for p in paths)


def test_skipped_lines_and_over_long_pairs_are_said_in_warnings(tmp_path):
    # A malformed training line under --skip-bad-lines, and a 1 MB validation line with the
    # default char tokenizer: both are reported on stderr, and the 1 MB line is dropped (not run
    # through the encoder a million steps long), so training finishes in seconds.
    assert run(["data", "--task", "reverse", "--out", "d"], tmp_path).returncode == 0
    train = (tmp_path / "d" / "train.tsv").read_text(encoding="utf-8").splitlines()[:300]
    train.insert(1, "no tab on this line")
    (tmp_path / "train.tsv").write_text("\n".join(train) + "\n", encoding="utf-8")
    valid = (tmp_path / "d" / "valid.tsv").read_text(encoding="utf-8").splitlines()[:40]
    valid.append("x" * 1_000_000 + "\t" + "y")
    (tmp_path / "valid.tsv").write_text("\n".join(valid) + "\n", encoding="utf-8")
    r = run(["train", "--train", "train.tsv", "--valid", "valid.tsv", "--skip-bad-lines",
             "--epochs", "1", "--emb-size", "8", "--hidden-size", "16", "--quiet", "--out", "m"],
            tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "train.tsv: skipped 1 malformed line(s) (line 2) because of --skip-bad-lines" in r.stderr
    assert "valid: dropped 1 of 41 pairs longer than --max-length 64 tokens" in r.stderr
    assert all(line.startswith("minis2s: warning:") for line in r.stderr.strip().splitlines())


def test_an_empty_vocabulary_is_refused_with_a_clear_error(tmp_path, monkeypatch, capsys):
    # The readers already refuse empty sides; a tokenizer that yields no tokens is the remaining
    # way to an empty vocabulary, and it must not get as far as building a model.
    from minis2s import cli, runs

    class Nothing:
        def tokenize(self, text):
            return []

    real = runs._tokenizers
    monkeypatch.setattr(runs, "_tokenizers", lambda cfg, task, splits: (Nothing(), real(cfg, task, splits)[1]))
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "--task", "reverse", "--n-train", "50", "--n-valid", "10",
                     "--n-test", "10", "--out", "m", "--quiet"])
    assert code == 2
    assert "minis2s: error: the source vocabulary is empty" in capsys.readouterr().err
    assert not (tmp_path / "m" / "last.npz").exists()


KOREAN = (list("삼천이십일"), list("3021"))


def test_korean_attention_labels_without_a_cjk_font_get_an_install_hint(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import numpy as np
    from minis2s import plot
    monkeypatch.setattr(plot, "_cjk_font", lambda: None)
    with pytest.raises(plot.PlotError, match="fonts-noto-cjk"):
        plot.plot_attention(*KOREAN, np.full((4, 5), 0.2), tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()
    # emoji and other symbols need no CJK font
    plot.plot_attention(["a", "😀"], ["b"], np.full((1, 2), 0.5), tmp_path / "emoji.png")
    assert (tmp_path / "emoji.png").stat().st_size > 0


def test_korean_attention_labels_render_with_an_installed_cjk_font(tmp_path):
    pytest.importorskip("matplotlib")
    import warnings
    import numpy as np
    from minis2s import plot
    font = plot._cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (e.g. apt-get install fonts-nanum); .ci/run installs one")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # matplotlib warns on missing glyphs
        plot.plot_attention(*KOREAN, np.full((4, 5), 0.2), tmp_path / "ko.png")
    assert (tmp_path / "ko.png").stat().st_size > 0


def test_device_cuda_without_a_usable_gpu_is_refused_before_any_work(tmp_path):
    import grad
    if grad.backend.gpu_available():
        pytest.skip("a GPU is available here, so --device cuda is valid")
    r = run(["train", "--device", "cuda", "--out", "never"], tmp_path)
    assert r.returncode == 2
    assert "backend 'cupy'" in r.stderr and ("not installed" in r.stderr or "no usable CUDA device" in r.stderr)
    assert not (tmp_path / "never").exists()                 # nothing was started


def test_lm_commands_train_score_rank_generate(tmp_path):
    corpus = tmp_path / "corpus.txt"
    lines = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog"] * 20
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = run(["lm", "train", "--corpus", "corpus.txt", "--model", "ngram", "--order", "2",
             "--min-freq", "1", "--out", "ng"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test perplexity" in r.stdout
    r = run(["lm", "score", "--model", "ng", "--rank"], tmp_path,
            input="mat the on sat cat the\nthe cat sat on the mat\n")
    assert r.returncode == 0, r.stderr
    ranked = [line.split("\t") for line in r.stdout.splitlines()[1:]]
    assert ranked[0][-1] == "the cat sat on the mat"            # the fluent order wins
    r = run(["lm", "score", "--model", "ng"], tmp_path, input="the cat sat\n")
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith("total")
    r = run(["lm", "train", "--corpus", "corpus.txt", "--model", "lstm", "--epochs", "1",
             "--hidden-size", "16", "--emb-size", "8", "--min-freq", "1", "--out", "lstm", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(["lm", "generate", "--model", "lstm", "--n", "3", "--top-k", "3", "--prompt", "the"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3
    assert all(line.startswith("the") for line in r.stdout.splitlines())


def test_translate_input_with_a_bad_byte_names_the_file_and_line(trained):
    cwd, _ = trained
    (cwd / "bad.txt").write_bytes(b"24 Nov 2026\n2 F\xe9b 2002\n")
    r = run(["translate", "--model", "model", "--input", "bad.txt"], cwd)
    assert r.returncode == 2
    assert r.stderr.strip() == ("minis2s: error: bad.txt:2: not valid UTF-8 (byte 0xe9 at byte "
                                "offset 3 of the line: invalid continuation byte)")


def test_data_takes_the_sizes_of_train_and_evaluate_warns_about_training_sources(trained, tmp_path):
    cwd, _ = trained
    # The trained fixture used --n-train 300: `data` with the same sizes writes its training set.
    r = run(["data", "--task", "dates", "--out", str(tmp_path / "same"), "--n-train", "300",
             "--n-valid", "40", "--n-test", "40"], cwd)
    assert r.returncode == 0, r.stderr
    lines = {s: (tmp_path / "same" / f"{s}.tsv").read_text(encoding="utf-8").splitlines()
             for s in ("train", "valid", "test")}
    assert [len(lines[s]) for s in ("train", "valid", "test")] == [300, 40, 40]
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("\n".join(lines["train"][:7] + lines["test"][:13]) + "\n", encoding="utf-8")
    r = run(["evaluate", "--model", "model", "--data", str(mixed), "--json"], cwd)
    assert r.returncode == 0, r.stderr
    assert f"minis2s: warning: 7 of 20 sources in {mixed} are in the training data of model" in r.stderr
    r = run(["evaluate", "--model", "model", "--data", str(tmp_path / "same" / "test.tsv"), "--json"], cwd)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
