"""`minis2s lm` at its edges: the compare table, empty input lines, bad bytes, damaged run
directories, and BPE tokens in the seq2seq trainer. Tiny settings; a few seconds in all."""
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minis2s.checkpoint import CheckpointError
from minis2s.cli import main
from minis2s.data.parallel import DataError
from minis2s.lm.training import LMConfig, fit_lm, load_corpus, load_lm

REPO = Path(__file__).resolve().parents[1]
LINES = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the cat ate"] * 5


def _cli(args, cwd, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "minis2s", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny corpus and one n-gram and one LSTM run directory trained on it."""
    root = tmp_path_factory.mktemp("lm")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    quiet = dict(corpus=str(corpus), min_freq=1, quiet=True)
    fit_lm(LMConfig(model="ngram", order=2, out=str(root / "ng"), **quiet), log=lambda m: None)
    fit_lm(LMConfig(model="lstm", epochs=1, hidden_size=8, emb_size=8, out=str(root / "lstm"),
                    **quiet), log=lambda m: None)
    return root


# ----------------------------------------------------------------------------- lm compare
def test_lm_compare_markov_prints_every_row_of_the_table(tmp_path):
    r = _cli(["lm", "compare", "--builtin", "markov", "--epochs", "1", "--hidden-size", "16",
              "--emb-size", "8"], tmp_path)
    assert r.returncode == 0, r.stderr
    header, *lines = r.stdout.splitlines()
    assert header == "1 BLAS thread (auto: hidden size 16 < 64, a second thread gains little)"
    assert lines[0].startswith("corpus: name=markov") and "matching_ngram_order=3" in lines[0]
    info = dict(kv.split("=", 1) for kv in lines[0][len("corpus: "):].split(", "))
    best = float(info["best_perplexity"])
    assert best == pytest.approx(math.exp(float(info["entropy_rate_nats"])))
    assert lines[1].split() == ["model", "test", "perplexity", "time", "(s)"]
    rows = [line.rsplit(None, 2) for line in lines[2:]]
    names = ([f"{n}-gram {s}" for n in range(1, 6) for s in ("add-k", "kneser-ney")]
             + ["LSTM (1x16)", "Transformer (2x16, 4 heads)"])
    assert [name for name, _, _ in rows] == names
    ppl = {name: float(p) for name, p, _ in rows}
    assert all(float(t) >= 0 for _, _, t in rows)
    assert all(1.0 < p < 6 for p in ppl.values())                   # 5 letters + </s>: 6 choices
    ngram = {k: v for k, v in ppl.items() if "gram" in k}
    assert min(ngram, key=ngram.get).startswith("3-gram")          # the matching order wins
    assert ppl["1-gram kneser-ney"] > ppl["2-gram kneser-ney"] > ppl["3-gram kneser-ney"]
    assert abs(math.log(ppl["3-gram kneser-ney"]) / math.log(best) - 1) < 0.02


# ----------------------------------------------------------------------------- lm score
@pytest.mark.parametrize("kind", ["ng", "lstm"])
def test_lm_score_scores_blank_lines_as_the_empty_sentence(runs, kind, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    lines = ["the cat sat", "", "the dog", "   ", "a cat"]
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["lm", "score", "--model", str(runs / kind), "--input", str(inp)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "line\tlog-probability\ttokens\tperplexity\tsentence"
    assert len(out) == len(lines) + 2 and out[-1].startswith("total")
    rows = [line.split("\t") for line in out[1:-1]]
    assert [r[4] for r in rows] == lines                            # aligned with the input
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    empty = load_lm(runs / kind).score([""])[0]
    for i in (1, 3):
        assert int(rows[i][2]) == 1                                 # one predicted token: </s>
        assert float(rows[i][1]) == pytest.approx(empty[0], abs=1e-4)
    assert int(out[-1].split("\t")[2]) == sum(int(r[2]) for r in rows)
    assert main(["lm", "score", "--model", str(runs / kind), "--input", str(inp), "--rank"]) == 0
    ranked = capsys.readouterr().out.splitlines()
    assert sorted(r.split("\t")[4] for r in ranked[1:-1]) == sorted(lines)


# ----------------------------------------------------------------------------- bad bytes
def test_lm_train_names_the_file_and_line_of_a_bad_byte(tmp_path, capsys):
    corpus = tmp_path / "latin1.txt"
    raw = [line.encode() for line in LINES[:12]]
    raw.insert(2, b"")                                              # blank lines still count
    raw[7] = "le café".encode("latin-1")                            # line 8: b"\xe9"
    corpus.write_bytes(b"\n".join(raw) + b"\n")
    with pytest.raises(DataError) as err:
        load_corpus(LMConfig(corpus=str(corpus)))
    assert err.value.line == 8 and err.value.path == str(corpus)
    assert main(["lm", "train", "--corpus", str(corpus), "--model", "ngram",
                 "--out", str(tmp_path / "never")]) == 2
    stderr = capsys.readouterr().err
    assert f"{corpus}:8:" in stderr and "UTF-8" in stderr and "0xe9" in stderr
    assert not (tmp_path / "never" / "ngram.json").exists()


def test_lm_score_names_the_line_of_a_bad_byte(runs, tmp_path, capsys):
    inp = tmp_path / "in.txt"
    inp.write_bytes(b"the cat\nthe \xff dog\n")
    assert main(["lm", "score", "--model", str(runs / "ng"), "--input", str(inp)]) == 2
    assert f"{inp}:2:" in capsys.readouterr().err


# ----------------------------------------------------------------------------- damaged runs
def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("kind,name,damage", [
    ("ng", "ngram.json", _truncate),
    ("ng", "ngram.json", lambda p: p.write_text('{"format": "minis2s-ngram"}', encoding="utf-8")),
    ("ng", "config.json", _truncate),
    ("lstm", "best.npz", _truncate),
    ("lstm", "best.npz", Path.unlink),
    ("lstm", "vocab.json", _truncate),
    ("lstm", "vocab.json", Path.unlink),
    ("lstm", "config.json", lambda p: p.write_text(
        p.read_text(encoding="utf-8").replace('"model"', '"modle"'), encoding="utf-8")),
])
def test_a_damaged_run_directory_is_refused_naming_the_file(runs, tmp_path, capsys, kind, name, damage):
    run = tmp_path / kind
    shutil.copytree(runs / kind, run)
    damage(run / name)
    with pytest.raises(CheckpointError) as err:
        load_lm(run)
    assert str(run / name) in str(err.value)
    assert main(["lm", "score", "--model", str(run), "--input", os.devnull]) == 2
    assert str(run / name) in capsys.readouterr().err


# ----------------------------------------------------------------------------- seq2seq + BPE
def test_seq2seq_trainer_with_bpe_tokens(tmp_path):
    """`minis2s train --tokenizer bpe --bpe-merges N`: both sides get learned merges, the run
    directory keeps them, and the loaded model tokenizes, round-trips and translates."""
    from minis2s import load
    from minis2s.train import TrainConfig, fit
    result = fit(TrainConfig(task="dates", tokenizer="bpe", bpe_merges=30, n_train=200, n_valid=20,
                             n_test=20, emb_size=8, hidden_size=16, epochs=1, batch_size=32,
                             out=str(tmp_path / "run"), quiet=True), log=lambda m: None)
    assert math.isfinite(result["test"]["loss"])
    model = load(tmp_path / "run")
    for tok in (model.src_tokenizer, model.tgt_tokenizer):
        d = tok.to_dict()
        assert d["name"] == "bpe" and 0 < len(d["merges"]) <= 30
        for text in ["March 3, 2001", "2001-03-03", "  ünseen 🦊 text\t"]:
            assert tok.detokenize(tok.tokenize(text)) == text
    assert any(len(t) > 1 for t in model.src_tokenizer.tokenize("March 3, 2001, May 12, 1999"))
    out = model.translate(["March 3, 2001", "May 12, 1999"], beam_size=2)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
