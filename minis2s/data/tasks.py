"""Built-in toy translation tasks, generated offline and deterministically from a seed.

Every source string belongs to one split for good, by a hash of the task name and the string
(``split_of``): 80% of all possible sources are training sources, 10% validation, 10% test.
Each split is then drawn from its own seeded stream (``random.Random(f"{seed}:{split}")``),
keeping the distinct sources that belong to it. So the validation and test splits are the same
whatever ``n_train`` is, and no training set of any size or seed holds a validation or test
source.  ``make_task(name)`` returns the splits as lists of ``(source, target)`` strings;
``write_task(name, out_dir)`` writes them as ``<split>.tsv`` files.

Tasks
-----
``dates``  (char -> char)
    A date between 1950-01-01 and 2049-12-31 written in one of the forms below, translated to
    ISO ``YYYY-MM-DD``.  Every form has a four-digit year and the only numeric month/day order
    is the US one (month first), so each input has exactly one answer.  For 2026-11-23 (and,
    to show padding, 2026-03-05)::

        weekday_long     Monday, November 23, 2026
        month_day_year   November 23, 2026
        mon_day_year     Nov 23, 2026
        day_month_year   23 November 2026
        day_mon_year     23 Nov 2026
        rfc              Mon, 23 Nov 2026
        us_slash         11/23/2026      3/5/2026      (month/day/year, not zero-padded)
        us_dash          11-23-2026      03-05-2026    (month-day-year, zero-padded)
        ymd_slash        2026/11/23      2026/03/05
        ymd_dot          2026.11.23      2026.03.05
        ordinal          23rd of November 2026
        lowercase        november 23 2026
        ko               2026년 11월 23일
        ko_weekday       2026년 11월 23일 월요일
        ko_weekday_short 2026년 11월 23일 (월)
        ko_dots          2026. 11. 23.   2026. 3. 5.
        ko_dots_weekday  2026. 11. 23. (월)

``reverse``  (space -> space)
    3 to 12 tokens from the letters ``a`` .. ``t``; the target is the sequence reversed.  The
    extra split ``test-long`` has 13 to 18 tokens, longer than anything seen in training.
``addition``  (char -> char)
    ``"535+61" -> "596"``: two integers of 1 to 3 digits (no leading zeros) and their sum.
``numbers``  (char -> space)
    ``"3021" -> "three thousand twenty-one"``: 0 .. 999999 in English words (see
    ``number_to_english``); the number of digits is drawn uniformly from 1 to 6.
``numbers-ko``  (char -> char)
    ``"3021" -> "삼천이십일"``: 0 .. 99999999 in Sino-Korean numerals (see
    ``number_to_korean``); the number of digits is drawn uniformly from 1 to 8.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

Sampler = Callable[[random.Random], tuple[str, str]]

# =============================================================================== dates
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_KO_WEEKDAYS = ["월", "화", "수", "목", "금", "토", "일"]      # Monday first, like date.weekday()

DATE_MIN = _dt.date(1950, 1, 1)
DATE_MAX = _dt.date(2049, 12, 31)


def _ordinal(day: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    if 11 <= day % 100 <= 13:
        return f"{day}th"
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _ko(d: _dt.date) -> str:
    return f"{d.year}년 {d.month}월 {d.day}일"


def _ko_dots(d: _dt.date) -> str:
    return f"{d.year}. {d.month}. {d.day}."


#: name -> function(date) -> written form; see the module docstring for examples.
DATE_FORMS: dict[str, Callable[[_dt.date], str]] = {
    "weekday_long": lambda d: f"{_WEEKDAYS[d.weekday()]}, {_MONTHS[d.month - 1]} {d.day}, {d.year}",
    "month_day_year": lambda d: f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",
    "mon_day_year": lambda d: f"{_MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    "day_month_year": lambda d: f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
    "day_mon_year": lambda d: f"{d.day} {_MONTHS[d.month - 1][:3]} {d.year}",
    "rfc": lambda d: f"{_WEEKDAYS[d.weekday()][:3]}, {d.day} {_MONTHS[d.month - 1][:3]} {d.year}",
    "us_slash": lambda d: f"{d.month}/{d.day}/{d.year}",
    "us_dash": lambda d: f"{d.month:02d}-{d.day:02d}-{d.year}",
    "ymd_slash": lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
    "ymd_dot": lambda d: f"{d.year}.{d.month:02d}.{d.day:02d}",
    "ordinal": lambda d: f"{_ordinal(d.day)} of {_MONTHS[d.month - 1]} {d.year}",
    "lowercase": lambda d: f"{_MONTHS[d.month - 1].lower()} {d.day} {d.year}",
    "ko": _ko,
    "ko_weekday": lambda d: f"{_ko(d)} {_KO_WEEKDAYS[d.weekday()]}요일",
    "ko_weekday_short": lambda d: f"{_ko(d)} ({_KO_WEEKDAYS[d.weekday()]})",
    "ko_dots": _ko_dots,
    "ko_dots_weekday": lambda d: f"{_ko_dots(d)} ({_KO_WEEKDAYS[d.weekday()]})",
}
_DATE_FORM_NAMES = list(DATE_FORMS)


def format_date(d: _dt.date, form: str) -> str:
    """Write ``d`` in the named form (a key of ``DATE_FORMS``)."""
    return DATE_FORMS[form](d)


def _sample_date(rng: random.Random) -> tuple[str, str]:
    d = _dt.date.fromordinal(rng.randint(DATE_MIN.toordinal(), DATE_MAX.toordinal()))
    form = _DATE_FORM_NAMES[rng.randrange(len(_DATE_FORM_NAMES))]
    return format_date(d, form), d.isoformat()


# =============================================================================== reverse
REVERSE_ALPHABET = [chr(ord("a") + i) for i in range(20)]        # "a" .. "t"


def _reverse_sampler(lo: int, hi: int) -> Sampler:
    def sample(rng: random.Random) -> tuple[str, str]:
        tokens = [rng.choice(REVERSE_ALPHABET) for _ in range(rng.randint(lo, hi))]
        return " ".join(tokens), " ".join(reversed(tokens))
    return sample


# =============================================================================== addition
def _random_int(rng: random.Random, n_digits: int) -> int:
    """A uniform integer with exactly ``n_digits`` digits (no leading zeros; 1 digit: 0..9)."""
    lo = 0 if n_digits == 1 else 10 ** (n_digits - 1)
    return rng.randint(lo, 10 ** n_digits - 1)


def _sample_addition(rng: random.Random) -> tuple[str, str]:
    a = _random_int(rng, rng.randint(1, 3))
    b = _random_int(rng, rng.randint(1, 3))
    return f"{a}+{b}", str(a + b)


# =============================================================================== numbers
_EN_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
            "seventeen", "eighteen", "nineteen"]
_EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_EN_SCALES = [(10 ** 6, "million"), (1000, "thousand")]


def _english_below_1000(n: int) -> list[str]:
    """Words for 1 <= n <= 999 (e.g. 115 -> ["one", "hundred", "fifteen"])."""
    words = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_EN_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_EN_TENS[tens] + (f"-{_EN_ONES[ones]}" if ones else ""))
    elif rest:
        words.append(_EN_ONES[rest])
    return words


def number_to_english(n: int) -> str:
    """Cardinal number in American English words, without "and"; 21-99 are hyphenated.

    ``0 -> "zero"``, ``115 -> "one hundred fifteen"``, ``3021 -> "three thousand twenty-one"``.
    Defined for 0 <= n < 10**9.
    """
    if not 0 <= n < 10 ** 9:
        raise ValueError(f"number_to_english needs 0 <= n < 10**9, got {n}")
    if n == 0:
        return "zero"
    words = []
    for scale, name in _EN_SCALES:
        if n >= scale:
            words += _english_below_1000(n // scale) + [name]
            n %= scale
    if n:
        words += _english_below_1000(n)
    return " ".join(words)


_KO_DIGITS = ["영", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]
_KO_PLACES = [(1000, "천"), (100, "백"), (10, "십"), (1, "")]


def _korean_below_10000(n: int) -> str:
    """1 <= n <= 9999 in Sino-Korean; a 1 before 천/백/십 is not spoken (1110 -> 천백십)."""
    out = []
    for value, place in _KO_PLACES:
        digit = (n // value) % 10
        if digit == 0:
            continue
        if digit == 1 and place:
            out.append(place)
        else:
            out.append(_KO_DIGITS[digit] + place)
    return "".join(out)


def number_to_korean(n: int) -> str:
    """Sino-Korean numerals without spaces, for 0 <= n <= 99999999.

    ``0 -> "영"``, ``10 -> "십"``, ``3021 -> "삼천이십일"``, ``10000 -> "만"`` (not 일만),
    ``110000 -> "십일만"``, ``1234567 -> "백이십삼만사천오백육십칠"``.
    """
    if not 0 <= n < 10 ** 8:
        raise ValueError(f"number_to_korean needs 0 <= n <= 99999999, got {n}")
    if n == 0:
        return _KO_DIGITS[0]
    man, rest = divmod(n, 10000)
    out = ""
    if man:
        out = ("" if man == 1 else _korean_below_10000(man)) + "만"
    if rest:
        out += _korean_below_10000(rest)
    return out


def _number_sampler(max_digits: int, convert: Callable[[int], str]) -> Sampler:
    def sample(rng: random.Random) -> tuple[str, str]:
        n = _random_int(rng, rng.randint(1, max_digits))
        return str(n), convert(n)
    return sample


# =============================================================================== registry
@dataclass(frozen=True)
class TaskSpec:
    """A built-in task: how to draw one example, which tokenizers suit it, default sizes.

    ``sample(rng) -> (source, target)`` draws one example; ``sample_long`` (if any) draws the
    examples of the extra ``test-long`` split.
    """

    name: str
    description: str
    src_tokenizer: str
    tgt_tokenizer: str
    sample: Sampler = field(repr=False)
    n_train: int = 20000
    n_valid: int = 1000
    n_test: int = 1000
    sample_long: Sampler | None = field(default=None, repr=False)
    n_test_long: int = 0

    @property
    def sizes(self) -> dict[str, int]:
        """Default number of examples per split, e.g. ``{"train": 20000, ...}``."""
        sizes = {"train": self.n_train, "valid": self.n_valid, "test": self.n_test}
        if self.sample_long is not None:
            sizes["test-long"] = self.n_test_long
        return sizes

    @property
    def splits(self) -> list[str]:
        return list(self.sizes)


TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("dates", "dates written in 17 English and Korean forms -> ISO YYYY-MM-DD",
             "char", "char", _sample_date),
    TaskSpec("reverse", "reverse a sequence of 3-12 letters (test-long: 13-18)",
             "space", "space", _reverse_sampler(3, 12), n_train=10000, n_valid=500,
             n_test=500, sample_long=_reverse_sampler(13, 18), n_test_long=500),
    TaskSpec("addition", "add two integers of up to 3 digits: 535+61 -> 596",
             "char", "char", _sample_addition),
    TaskSpec("numbers", "0..999999 in digits -> English words: 3021 -> three thousand twenty-one",
             "char", "space", _number_sampler(6, number_to_english)),
    TaskSpec("numbers-ko", "0..99999999 in digits -> Sino-Korean numerals: 3021 -> 삼천이십일",
             "char", "char", _number_sampler(8, number_to_korean)),
]}


def get_task(name: str) -> TaskSpec:
    """The ``TaskSpec`` of a built-in task; ``ValueError`` listing the valid names."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


# Each source's split, for good: a hash of (task, source) in [0, 1) against these bounds.
SPLIT_SHARES = {"valid": (0.0, 0.1), "test": (0.1, 0.2), "train": (0.2, 1.0)}


def split_of(task: str, source: str) -> str:
    """The split a source string of ``task`` belongs to, whatever the sizes or the seed:
    ``"train"``, ``"valid"`` or ``"test"`` (80/10/10 of all sources, by a SHA-256 hash)."""
    digest = hashlib.sha256(f"{task}\t{source}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64                      # uniform in [0, 1)
    for split, (lo, hi) in SPLIT_SHARES.items():
        if lo <= u < hi:
            return split
    return "train"


def _draw_unique(sample: Sampler, rng: random.Random, n: int, seen: set, task: str,
                 split: str | None = None) -> list:
    """``n`` examples whose sources are not in ``seen`` (which is updated) and, when ``split``
    is given, belong to that split (``split_of``)."""
    out = []
    share = 1.0 if split is None else SPLIT_SHARES[split][1] - SPLIT_SHARES[split][0]
    attempts, limit = 0, int((100 * n + 10000) / share)
    while len(out) < n:
        attempts += 1
        if attempts > limit:
            where = f" for the {split} split" if split else ""
            raise ValueError(f"task {task!r} could not produce {n} distinct examples{where} "
                             f"(got {len(out)}); ask for fewer")
        src, tgt = sample(rng)
        if src not in seen and (split is None or split_of(task, src) == split):
            seen.add(src)
            out.append((src, tgt))
    return out


def make_task(name: str, seed: int = 0, n_train: int | None = None, n_valid: int | None = None,
              n_test: int | None = None) -> dict[str, list[tuple[str, str]]]:
    """Generate the splits of a built-in task.

    Returns ``{"train": [...], "valid": [...], "test": [...]}`` (plus ``"test-long"`` for
    ``reverse``, as large as ``test``) of ``(source, target)`` string pairs.  The same
    ``(name, seed, size of a split)`` always gives the same split: the validation and test
    splits do not depend on ``n_train`` (nor on each other's size), and every source is in the
    one split ``split_of`` assigns it, so no source string is in two splits of any two calls.
    ``None`` sizes take the task's defaults (``TASKS[name].sizes``).
    """
    spec = get_task(name)
    sizes = {"train": spec.n_train if n_train is None else n_train,
             "valid": spec.n_valid if n_valid is None else n_valid,
             "test": spec.n_test if n_test is None else n_test}
    for split, size in sizes.items():
        if size < 0:
            raise ValueError(f"n_{split} must be >= 0, got {size}")
    splits = {}
    for split, size in sizes.items():
        rng = random.Random(f"{seed}:{split}")
        examples = _draw_unique(spec.sample, rng, size, set(), name, split)
        # Rare sources (e.g. one-digit numbers) are found first; shuffle so that the order of
        # the split does not follow rarity.
        rng.shuffle(examples)
        splits[split] = examples
    if spec.sample_long is not None:      # longer than any training source: no overlap possible
        n_long = spec.n_test_long if n_test is None else n_test
        splits["test-long"] = _draw_unique(spec.sample_long, random.Random(f"{seed}:test-long"),
                                           n_long, set(), name)
    return splits


def write_task(name: str, out_dir, seed: int = 0, **sizes) -> dict[str, Path]:
    """Write the splits of ``make_task(name, seed, **sizes)`` to ``out_dir/<split>.tsv``
    (UTF-8, ``source<TAB>target`` per line).  Returns ``{split: path}``.

    Existing files are never overwritten: if any of the split files is already there, a
    ``ValueError`` names it before anything is written. Each file is written atomically
    (``checkpoint.atomic_write``), and a failure removes the files this call wrote."""
    from ..checkpoint import atomic_write
    splits = make_task(name, seed, **sizes)
    out = Path(out_dir)
    paths = {split: out / f"{split}.tsv" for split in splits}
    for path in paths.values():
        if path.exists() or path.is_symlink():
            raise ValueError(f"{path} already exists; minis2s data does not overwrite files: "
                             f"choose another --out or remove it")
    created = [d for d in (out, *out.parents) if not d.exists()]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for split, pairs in splits.items():
            data = "".join(f"{src}\t{tgt}\n" for src, tgt in pairs).encode("utf-8")
            atomic_write(paths[split], lambda f: f.write(data))
            written.append(paths[split])
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for d in created:                  # deepest first, only if left empty
            try:
                d.rmdir()
            except OSError:
                break
        raise
    return paths
