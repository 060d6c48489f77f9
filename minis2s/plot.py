"""Plots (matplotlib, the optional extra ``minis2s[plot]``): training curves and attention maps."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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


def _run_kind(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _epoch_axis(ax) -> None:
    """Whole-number epoch ticks, plain numbers on both axes."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    for axis in (ax.xaxis, ax.yaxis):
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
        axis.set_major_formatter(formatter)


def plot_run(run_dir, out):
    """Training curves from ``run_dir/log.jsonl``: cross-entropy per epoch (train and valid, with
    the matching perplexities on the right-hand axis) and, for a seq2seq run, the validation
    exact match, token accuracy and BLEU. An LSTM language model run has the valid curve; an
    n-gram run has none (it is counted in one pass), which is said plainly. Returns the Figure."""
    run_dir = Path(run_dir)
    kind = _run_kind(run_dir)
    if kind == "lm-ngram":
        raise PlotError(f"{run_dir} is an n-gram language model: it is estimated by counting in one "
                        "pass, so it has no training curve to plot (its perplexities are printed by "
                        "'minis2s lm train' and 'minis2s lm score')")
    path = run_dir / "log.jsonl"
    if not path.is_file():
        raise PlotError(f"{path}: no training log found (is {run_dir} a run directory?)")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise PlotError(f"{path}: the log is empty (no epoch has finished yet)")
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    seq2seq = "valid_exact_match" in records[0]
    fig, axes = plt.subplots(1, 2 if seq2seq else 1, figsize=(10 if seq2seq else 5.5, 4), squeeze=False)
    ax1 = axes[0][0]
    if "train_loss" in records[0]:
        ax1.plot(epochs, [r["train_loss"] for r in records], "o-", label="train")
    ax1.plot(epochs, [r["valid_loss"] for r in records], "o-", label="valid")
    ax1.set_ylabel("cross-entropy per token (nats)")
    ax1.set_title("loss (right axis: perplexity = exp(loss))", fontsize=10)
    _epoch_axis(ax1)
    right = ax1.secondary_yaxis("right", functions=(lambda x: np.exp(x), lambda y: np.log(np.maximum(y, 1e-12))))
    right.set_ylabel("perplexity")
    ax1.legend()
    if seq2seq:
        ax2 = axes[0][1]
        decoding = records[-1].get("valid_decoding", "greedy")
        for key, label in (("valid_exact_match", "exact match"), ("valid_token_acc", "token accuracy")):
            ax2.plot(epochs, [100 * r[key] for r in records], "o-", label=label)
        ax2.plot(epochs, [r["valid_bleu"] for r in records], "o-", label="BLEU")
        ax2.set_ylabel("valid score (%, BLEU 0-100)")
        ax2.set_title(f"validation ({decoding} decoding)", fontsize=10)
        ax2.set_ylim(-2, 102)
        _epoch_axis(ax2)
        ax2.legend()
    what = {"lm-lstm": "LSTM language model",
            "lm-transformer": "Transformer language model"}.get(kind, "seq2seq")
    fig.suptitle(f"{run_dir} ({what})")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return fig


SPACE = "\u2423"        # ␣, drawn with DejaVu Sans (matplotlib's own font) whatever the CJK font


def _font_family(src_tokens, out_tokens, title) -> list:
    labels = [str(t) for t in list(src_tokens) + list(out_tokens)] + ([title] if title else [])
    family = ["DejaVu Sans"]
    if _needs_cjk(labels):
        font = _cjk_font()
        if font is None:
            raise PlotError("the tokens contain Korean (or other CJK) characters but no CJK font is "
                            "installed, so they would be drawn as boxes; install one, e.g. "
                            "'apt-get install fonts-noto-cjk' or 'fonts-nanum', then retry")
        family.append(font)
    return family


def plot_attention_grid(src_tokens, out_tokens, weights, out, title: str | None = None):
    """Every head of every layer: ``weights`` ``(layers, heads, len(out_tokens),
    len(src_tokens))`` drawn as a grid of heat maps, one row per layer and one column per head
    (a Transformer's cross-attention), on one colour scale from 0 to 1. Returns the Figure."""
    plt = _pyplot()
    family = _font_family(src_tokens, out_tokens, title)
    show = lambda t: SPACE if t == " " else str(t)
    n_layers, n_heads = weights.shape[:2]
    n_out, n_src = len(out_tokens), len(src_tokens)
    cell_w, cell_h = max(2.5, 0.22 * n_src + 1), max(2.0, 0.22 * n_out + 1)
    fig, axes = plt.subplots(n_layers, n_heads, squeeze=False,
                             figsize=(cell_w * n_heads + 1.5, cell_h * n_layers + 1))
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer][head]
            image = ax.imshow(weights[layer, head, :n_out, :n_src], cmap="viridis",
                              aspect="auto", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
            ax.set_xticks(range(n_src))
            ax.set_xticklabels([show(t) for t in src_tokens], fontfamily=family, fontsize=6,
                               rotation=90)
            ax.set_yticks(range(n_out))
            ax.set_yticklabels([show(t) for t in out_tokens], fontfamily=family, fontsize=6)
    fig.colorbar(image, ax=axes, label="attention weight")
    if title:
        fig.suptitle(title, fontfamily=family)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return fig


def plot_attention(src_tokens, out_tokens, weights, out, title: str | None = None):
    """A heat map of ``weights`` ``(len(out_tokens), len(src_tokens))``: rows are output tokens,
    columns source tokens, with a colour bar and ``title`` (e.g. the source sentence). Labels of
    one or two characters stay upright; a space is drawn as ``␣``. Text goes through
    matplotlib's font fallback (DejaVu Sans, then a CJK font for Hangul); if Hangul is present
    but no CJK font is installed, ``PlotError`` says which package to install instead of drawing
    empty boxes. Returns the Figure."""
    plt = _pyplot()
    family = _font_family(src_tokens, out_tokens, title)
    show = lambda t: SPACE if t == " " else str(t)
    n_out, n_src = len(out_tokens), len(src_tokens)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.35 * n_src + 3), max(3.5, 0.35 * n_out + 2)))
    image = ax.imshow(weights[:n_out, :n_src], cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n_src))
    ax.set_xticklabels([show(t) for t in src_tokens], fontfamily=family)
    for label in ax.get_xticklabels():          # short labels upright, longer ones turned
        label.set_rotation(0 if len(label.get_text()) <= 2 else 90)
    ax.set_yticks(range(n_out))
    ax.set_yticklabels([show(t) for t in out_tokens], fontfamily=family)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.colorbar(image, ax=ax, label="attention weight")
    if title:
        ax.set_title(title, fontfamily=family)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return fig
