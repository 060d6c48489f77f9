"""Plots (matplotlib, the optional extra ``minis2s[plot]``): training curves and attention maps."""
from __future__ import annotations

import json
from pathlib import Path

CJK_FONTS = ("Noto Sans CJK KR", "Noto Sans CJK JP", "Noto Sans KR", "NanumGothic", "NanumBarunGothic",
             "UnDotum", "Baekmuk Gulim", "Malgun Gothic", "AppleGothic", "Noto Serif CJK KR")


class PlotError(ValueError):
    pass


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install 'minis2s[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# Hangul Jamo, CJK radicals .. Yi (incl. kana, Hangul compatibility jamo, CJK ideographs),
# Hangul syllables, CJK compatibility ideographs, half/full-width forms
_CJK_RANGES = ((0x1100, 0x11FF), (0x2E80, 0xA4CF), (0xA960, 0xA97F), (0xAC00, 0xD7FF),
               (0xF900, 0xFAFF), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))


def _needs_cjk(labels) -> bool:
    """Whether any label has a Korean, Chinese or Japanese character (emoji and other symbols
    do not need a CJK font)."""
    return any(lo <= ord(ch) <= hi for label in labels for ch in label for lo, hi in _CJK_RANGES)


def _cjk_font():
    """The name of an installed font that has Hangul, or None. Fonts installed after
    matplotlib built its font cache are found by scanning the system's font files once."""
    from matplotlib import font_manager
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in installed:
            return name
    hints = ("nanum", "notosanscjk", "notoserifcjk", "notosanskr", "undotum", "baekmuk")
    for path in font_manager.findSystemFonts():
        flat = Path(path).name.lower().replace("-", "").replace("_", "")
        if any(h in flat for h in hints):
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def plot_run(run_dir, out) -> None:
    """Loss and perplexity per epoch (train and valid) from ``run_dir/log.jsonl``."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise PlotError(f"{path}: no training log found (is {run_dir} a run directory?)")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise PlotError(f"{path}: the log is empty (no epoch has finished yet)")
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in records], "o-", label="train")
    ax1.plot(epochs, [r["valid_loss"] for r in records], "o-", label="valid")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy per token (nats)")
    ax1.legend()
    ax2.plot(epochs, [r["train_ppl"] for r in records], "o-", label="train")
    ax2.plot(epochs, [r["valid_ppl"] for r in records], "o-", label="valid")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("perplexity = exp(cross-entropy)")
    ax2.set_yscale("log")
    ax2.legend()
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_attention(src_tokens, out_tokens, weights, out) -> None:
    """A heat map of ``weights`` ``(len(out_tokens), len(src_tokens))``: rows are output tokens,
    columns source tokens. Hangul labels need a CJK font; if none is installed, say how to get one
    instead of drawing empty boxes."""
    plt = _pyplot()
    labels = [str(t) for t in list(src_tokens) + list(out_tokens)]
    font = None
    if _needs_cjk(labels):
        font = _cjk_font()
        if font is None:
            raise PlotError("the tokens contain Korean (or other CJK) characters but no CJK font is "
                            "installed, so they would be drawn as boxes; install one, e.g. "
                            "'apt-get install fonts-noto-cjk' or 'fonts-nanum', then retry")
    show = lambda t: "␣" if t == " " else t
    n_out, n_src = len(out_tokens), len(src_tokens)
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * n_src + 2), max(3, 0.35 * n_out + 1.5)))
    ax.imshow(weights[:n_out, :n_src], cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    kw = {"fontfamily": font} if font else {}
    ax.set_xticks(range(n_src))
    ax.set_xticklabels([show(t) for t in src_tokens], rotation=90, **kw)
    ax.set_yticks(range(n_out))
    ax.set_yticklabels([show(t) for t in out_tokens], **kw)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
