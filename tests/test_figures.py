"""The guides' figures: ``minis2s figures`` and ``benchmarks/ablations.py`` run on tiny settings
and write PNGs; every image the docs show exists in the repository."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib not installed (the [plot] extra)")


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


@needs_matplotlib
def test_minis2s_figures_draws_every_figure_on_tiny_settings(tmp_path, capsys):
    from minis2s.cli import main
    from minis2s.figures import FIGURES
    assert main(["figures", "--out", str(tmp_path), "--tiny"]) == 0
    written = [Path(line.split("wrote ", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    assert len(written) == len(FIGURES)
    for path in written:
        assert path.parent == tmp_path and _is_png(path), path


def test_minis2s_figures_refuses_a_missing_directory(tmp_path, capsys):
    from minis2s.cli import main
    assert main(["figures", "--out", str(tmp_path / "nope"), "--only", "entropy"]) == 2
    assert "no such directory" in capsys.readouterr().err


@needs_matplotlib
def test_the_ablation_script_runs_its_protocol_on_tiny_settings(tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablations.py"), "--tiny",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "ablations-tiny.json").read_text())
    protocol = data["protocol"]
    n = len(protocol["tasks"]) * len(protocol["variants"]) * len(protocol["seeds"])
    assert len(data["runs"]) == n
    for run in data["runs"]:
        epochs = protocol["tasks"][run["task"]]["epochs"]
        assert [c["epoch"] for c in run["curves"]] == list(range(1, epochs + 1))
        assert "test" in run["test"] and 0.0 <= run["test"]["test"]["exact_match"] <= 1.0
    assert set(data["summary"]["reverse"]) == set(protocol["variants"])
    assert "test-long" in data["summary"]["reverse"]["baseline"]        # reverse's long split
    assert "| baseline |" in proc.stdout
    for group in protocol["groups"]:
        assert _is_png(tmp_path / f"ablation-tiny-{group}.png")


def test_every_image_the_docs_show_is_in_the_repository():
    image = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", re.S)
    missing, seen = [], 0
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in image.findall(md.read_text(encoding="utf-8")):
            seen += 1
            if not (md.parent / target).resolve().is_file():
                missing.append(f"{md.relative_to(ROOT)}: {target}")
    assert seen >= 8 and not missing, missing
