"""Memory estimates, checked before a large allocation is made.

An absurd setting (``--hidden-size 1000000000``, ``--beam-size 1000000000``, an n-gram order of a
million, a crafted ``config.json``) would otherwise fail deep inside NumPy with a ``MemoryError``
traceback, or worse, fill the machine's memory and stall it for minutes before failing. Each
place that is about to allocate in proportion to a setting first estimates the bytes it needs
(``*_bytes`` below) and calls ``require``, which refuses -- with the estimate -- what exceeds the
memory available:

* the limit given with ``--max-memory SIZE`` (``set_limit``), or else
* ``MemAvailable`` from ``/proc/meminfo`` (Linux: free memory plus what the kernel can reclaim),
  or else the free physical pages ``os.sysconf`` reports; where neither is known nothing is
  refused.

The estimates count the arrays a computation keeps alive at its peak (weights, gradients,
optimizer moments, the widest activations), not Python's own overhead, so they are lower bounds:
what ``require`` refuses cannot fit, while what it lets through may still be tight.
"""
from __future__ import annotations

import math
import os
import re

FLOAT = 4          # bytes per float32 element, the parameters' dtype
_limit: int | None = None


class MemoryLimitError(ValueError):
    """A setting whose estimated memory exceeds what is available; the message gives both."""


# ----------------------------------------------------------------------------- the limit
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"512M"``, ``"4G"``, ``"1.5GB"``, ``"2TiB"`` or a plain number of bytes -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", str(text).upper())
    if not m or (m[3] and not m[2] and m[3] != "B"):
        raise ValueError(f"expected a size such as 512M, 4G or 1.5GB, got {text!r}")
    value = float(m[1]) * _UNITS[m[2]]
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"expected a positive size, got {text!r}")
    return int(value)


def set_limit(nbytes: int | None) -> None:
    """Use ``nbytes`` as the memory available (``--max-memory``); ``None``: ask the system."""
    global _limit
    _limit = None if nbytes is None else int(nbytes)


def mem_available() -> int | None:
    """``MemAvailable`` in bytes from ``/proc/meminfo``, else free physical memory, else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available() -> tuple[int | None, str]:
    """The memory a computation may use and where that figure comes from."""
    if _limit is not None:
        return _limit, "--max-memory"
    return mem_available(), "MemAvailable"


def format_bytes(n: float) -> str:
    """``1536 -> "1.5 KiB"``; very large figures stay readable (``"8.7e+06 TiB"``)."""
    n = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB" if n < 1e5 else f"{n:.2g} TiB"


def require(nbytes: float, what: str) -> None:
    """Refuse ``what`` (``"a model with hidden_size 1000000000"``) when ``nbytes`` exceeds the
    memory available."""
    limit, source = available()
    if limit is not None and nbytes > limit:
        hint = ("raise --max-memory if the estimate is wrong" if source == "--max-memory"
                else "or give --max-memory SIZE to set the limit yourself")
        raise MemoryLimitError(f"{what} needs about {format_bytes(nbytes)} of memory (estimate), "
                               f"more than the {format_bytes(limit)} available ({source}); "
                               f"choose a smaller setting, {hint}")


# ----------------------------------------------------------------------------- estimates
def lstm_params(input_size: int, hidden_size: int, num_layers: int, directions: int = 1) -> int:
    """Parameters of ``grad.nn.LSTM``: per layer and direction ``W_ih (4H, in)``, ``W_hh (4H, H)``
    and two ``(4H,)`` biases; layers above the first read ``directions * H`` inputs."""
    h = hidden_size
    first = 4 * h * (input_size + h + 2)
    rest = 4 * h * (directions * h + h + 2)
    return directions * (first + (num_layers - 1) * rest)


def seq2seq_params(src_vocab_size: int, tgt_vocab_size: int, emb_size: int, hidden_size: int,
                   num_layers: int, attention: str | None = "general", input_feeding: bool = True,
                   **_ignored) -> int:
    """Parameters of ``minis2s.models.Seq2Seq`` (exact; tests compare with a built model)."""
    h, e = hidden_size, emb_size
    encoder = src_vocab_size * e + lstm_params(e, h // 2, num_layers, directions=2)
    decoder = (tgt_vocab_size * e + lstm_params(e + (h if input_feeding else 0), h, num_layers)
               + h * tgt_vocab_size + tgt_vocab_size)
    if attention == "general":
        decoder += h * h + 2 * h * h
    elif attention == "dot":
        decoder += 2 * h * h
    return encoder + decoder


def lstm_lm_params(vocab_size: int, emb_size: int, hidden_size: int, num_layers: int,
                   **_ignored) -> int:
    """Parameters of ``minis2s.lm.lstm_lm.LSTMLanguageModel`` as built (with tied weights the
    output matrix is built, then replaced by the embedding)."""
    return (vocab_size * emb_size + lstm_params(emb_size, hidden_size, num_layers)
            + hidden_size * vocab_size + vocab_size)


def transformer_lm_params(vocab_size: int, d_model: int, num_layers: int, dim_feedforward: int,
                          learned_positions: int = 0, **_ignored) -> int:
    """Parameters of ``minis2s.lm.transformer_lm.TransformerLanguageModel`` as built: embedding,
    learned positions (rows, 0 for sinusoidal), per layer attention (``4 E^2 + 4 E``), feed-forward
    (``2 E F + F + E``) and two LayerNorms (``4 E``), the final LayerNorm and the generator."""
    e, f = d_model, dim_feedforward
    per_layer = 4 * e * e + 4 * e + 2 * e * f + f + e + 4 * e
    return (vocab_size * e + learned_positions * e + num_layers * per_layer + 2 * e
            + e * vocab_size + vocab_size)


def model_bytes(n_params: int) -> int:
    """A built model: every parameter in float32."""
    return FLOAT * n_params


def training_bytes(n_params: int, optimizer: str = "adam") -> int:
    """Training keeps weights and gradients, plus two moments per weight for Adam (SGD none)."""
    return FLOAT * n_params * (4 if optimizer == "adam" else 2)


def lstm_activation_bytes(batch: int, steps: int, hidden_size: int, num_layers: int,
                          vocab_size: int, emb_size: int) -> int:
    """Activations a teacher-forced LSTM pass keeps for the backward pass: per token and layer
    the four gates and the two states, the embedding, and the logits with their softmax."""
    per_token = num_layers * 6 * hidden_size + emb_size + 2 * vocab_size
    return FLOAT * batch * steps * per_token


def beam_search_bytes(batch: int, beam_size: int, src_len: int, hidden_size: int,
                      num_layers: int, vocab_size: int, max_len: int) -> int:
    """Beam search over ``batch`` sentences: ``batch * beam_size`` rows, each with its copy of
    the encoder outputs ``(S, H)``, the scores over the vocabulary (log-probabilities, totals and
    the flattened candidates), the LSTM states and, for ``max_len`` steps, the token and
    attention history."""
    rows = batch * beam_size
    per_row = (FLOAT * src_len * hidden_size + 3 * FLOAT * vocab_size
               + 2 * FLOAT * 2 * num_layers * hidden_size + 8 * max_len * (1 + src_len))
    return rows * per_row


def ngram_bytes(n_events: int, order: int, kneser_ney: bool = True) -> int:
    """Counting n-grams: one ``order``-tuple per predicted token (8 bytes a slot, ~120 bytes of
    tuple and dictionary entry); interpolated Kneser-Ney keeps a table per lower order too,
    ``sum_n (8 n + 120)`` per token, and a few empty dictionaries per order (~600 bytes).
    Scoring pads a sentence with ``order - 1`` symbols and slices a context of as many."""
    if kneser_ney:
        per_event = 8 * order * (order + 1) // 2 + 120 * order
        return n_events * per_event + 600 * order
    return n_events * (8 * order + 120) + 16 * order
