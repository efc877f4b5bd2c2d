"""Reading a CSV file into compact columns, with every row accounted for.

Why not lists of strings: a Python ``str`` per cell costs ~55 bytes against the ~7 the cell takes in
the file, so a 50 MB table held that way needs well over 1 GB.  A :class:`Column` keeps each cell as
a float (8 bytes) and only the cells that are not numbers (or whose spelling matters: categorical
columns, the target while it has few values) as codes into a list of distinct strings.  It is still a
``Sequence[str]`` (a number's spelling is rebuilt on access), so the loader's code reads it like a list.

Rows are read in chunks of :data:`CHUNK`: each chunk's column is parsed by ``map(float, ...)`` at C
speed and only a chunk with a cell that is not a plain number is parsed cell by cell.

What is guaranteed (docs/reliability.md, "Reading CSV files"): every physical line of the file is a data row, a blank
line (counted in the log), part of a quoted cell that spans lines (counted), or the file is refused in
one line that names the line.  A quote that is never closed, or that swallows what look like rows
(a stray quote closed by another one further down), is refused with the line it opened on.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import functools
import logging
import math
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence

from mlptrain.errors import DataError

log = logging.getLogger("mlptrain")

CHUNK = 4096  # rows parsed together: large enough for C-speed column parsing, small enough to be cheap to hold
SPELLINGS_KEPT = 65536  # a target keeps its cells' spellings while it has at most this many distinct values
FLOAT32_MAX = 3.4028234663852886e38
_NAN = float("nan")
_INT_CHARS = frozenset("0123456789+- \t")
_INF_WORDS = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}

# Number spellings beyond Python's float(): thousands separators and decimal commas.  A column is read
# under one convention; a cell that fits neither makes the column text (the log says which cells).
_SEP = "[,  '’]"  # comma, (no-break / narrow no-break) space, apostrophes: thousands separators
DOT_DECIMAL = "1,234.5"
COMMA_DECIMAL = "1.234,5"
_FORMATS = {
    DOT_DECIMAL: (re.compile(r"[+-]?\d{1,3}(?:(,)\d{3}(?:\1\d{3})*|([  '’])\d{3}(?:\2\d{3})*)(?:\.\d*)?"), ","),
    COMMA_DECIMAL: (
        re.compile(r"[+-]?(?:\d{1,3}(?:(\.)\d{3}(?:\1\d{3})*|([  '’])\d{3}(?:\2\d{3})*)(?:,\d*)?|\d*,\d+|\d+,)"),
        ".",
    ),
}
_DOT_GROUPED = re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+")  # "2.000": 2 under 1,234.5, two thousand under 1.234,5


def parse_spelled(text: str, number_format: str | None) -> float | None:
    """A cell that ``float()`` refuses, read under a column's number format (None: plain numbers only)."""
    if number_format is None:
        return None
    pattern, thousands = _FORMATS[number_format]
    text = text.strip()
    if not pattern.fullmatch(text):
        return None
    for sep in (thousands, " ", "\u00a0", "\u202f", "'", "’"):
        text = text.replace(sep, "")
    return float(text.replace(",", ".")) if number_format == COMMA_DECIMAL else float(text)


def _choose_format(texts: Iterable[str], plain_dot: bool, delimiter: str) -> str | None:
    """The number format under which most of a column's non-number ``texts`` (each with a digit) are
    numbers, if one is; the cells it does not read stay errors (or make the column text)."""
    texts = list(texts)
    score = {f: sum(parse_spelled(t, f) is not None for t in texts) for f in (DOT_DECIMAL, COMMA_DECIMAL)}
    if plain_dot:
        score[COMMA_DECIMAL] = 0  # "1.5" was read as a plain decimal: a dot is not a thousands separator here
    best = max(score.values())
    if best * 2 < len(texts) or best == 0:
        return None
    if score[DOT_DECIMAL] == score[COMMA_DECIMAL]:  # every cell like "1,234": thousands, unless ';'-delimited
        return COMMA_DECIMAL if delimiter == ";" else DOT_DECIMAL
    return max(score, key=score.get)


class Column(Sequence):
    """One column: ``nums[i]`` is cell i's number (NaN when it is not one); ``codes[i] >= 0`` points into
    ``texts`` for a cell whose text is kept (not a number, or its spelling matters).  Indexing gives the
    stripped text of a cell; a number without a kept spelling is rebuilt (``3`` in an integer column,
    else ``repr``: ``2.5``, ``3.0``)."""

    def __init__(self, name: str, spellings: str = "auto"):
        self.name = name
        # Whose spellings are kept: "all" (a categorical column: every cell), "bounded" (the target: every
        # cell while it has few distinct values, then "values"), "auto" (a feature: the cells of chunks
        # that are not all plain numbers), "values" (only cells that are not numbers).
        self.spellings = spellings
        self.nums = array("d")
        self.codes: array | None = None  # present when some cell kept its text
        # While reading, one array per chunk, joined once at the end: growing one array chunk by chunk
        # reallocates it over and over, and the holes that leaves cost as much resident memory as the data.
        self._nums: list[array] = []
        self._codes: list[array | None] = []
        self.texts: list[str] = []
        self._index: dict[str, int] = {}
        self.int_spelled = True  # every number so far spelled as an integer: "3", not "3.0"
        self.plain_dot = False  # some plain number has a decimal point that is not a thousands group
        self.number_format: str | None = None
        self.overflow: tuple[int, str] | None = None  # the first cell too large for float32: (row, text)

    # -- Sequence[str]
    def __len__(self) -> int:
        return len(self.nums)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        codes = self.codes
        if codes is not None and codes[i] >= 0:
            return self.texts[codes[i]]
        x = self.nums[i]
        return str(int(x)) if self.int_spelled and x.is_integer() else repr(x)

    def __iter__(self) -> Iterator[str]:
        if self.codes is None:  # every cell a number: rebuilt at C speed
            return map(str, map(int, self.nums)) if self.int_spelled else map(repr, self.nums)
        return map(self.__getitem__, range(len(self)))

    def values(self) -> array:
        """Each cell's number (NaN where it is not one)."""
        return self.nums

    # -- building
    def _code(self, text: str) -> int:
        k = self._index.get(text)
        if k is None:
            k = self._index[text] = len(self.texts)
            self.texts.append(text)
        return k

    def add(self, cells: Sequence[str], first_row: int) -> None:
        """Append a chunk of raw cells (row ``first_row`` onwards)."""
        if self.spellings in ("auto", "values"):
            try:  # the common case: a chunk of plain finite numbers, parsed at C speed
                values = list(map(float, cells))
            except ValueError:
                values = None
            if values and all(map(math.isfinite, values)) and max(max(values), -min(values)) <= FLOAT32_MAX:
                joined = "".join(cells)
                if self.int_spelled and not _INT_CHARS.issuperset(joined):
                    self.int_spelled = False
                if not self.plain_dot and "." in joined:
                    if not all(_DOT_GROUPED.fullmatch(c.strip()) for c in cells if "." in c):
                        self.plain_dot = True
                    else:  # "2.000": ambiguous until the column's format is known, so its spelling is kept
                        values = None
                if values is not None:
                    self._nums.append(array("d", values))
                    self._codes.append(None)
                    return
        self._add_slowly(cells, first_row)

    def _add_slowly(self, cells: Sequence[str], first_row: int) -> None:
        """A chunk with a cell that is not a plain number: parsed once per distinct text."""
        stripped = list(map(str.strip, cells))
        value_of: dict[str, float] = {}
        for text in set(stripped):
            try:
                value_of[text] = float(text)
            except ValueError:
                value_of[text] = _NAN
        others = [t for t, x in value_of.items() if not math.isfinite(x)]
        for t in others:
            if math.isinf(value_of[t]) and t.lower() not in _INF_WORDS and self.overflow is None:
                self.overflow = (first_row + stripped.index(t), t)  # "1e400": a finite spelling beyond float64
            value_of[t] = _NAN
        numbers = [t for t, x in value_of.items() if x == x]
        code_of = dict.fromkeys(numbers, -1)
        if numbers:
            joined = "".join(numbers)
            if self.int_spelled and not _INT_CHARS.issuperset(joined):
                self.int_spelled = False
            if not self.plain_dot and "." in joined:
                ambiguous = [t for t in numbers if "." in t]
                if all(map(_DOT_GROUPED.fullmatch, ambiguous)):
                    code_of.update((t, self._code(t)) for t in ambiguous)  # "2.000": kept until the format is known
                else:
                    self.plain_dot = True
            big = [t for t in numbers if abs(value_of[t]) > FLOAT32_MAX]
            if big and self.overflow is None:
                row = min(stripped.index(t) for t in big)
                self.overflow = (first_row + row, stripped[row])
        values = list(map(value_of.__getitem__, stripped))
        n_numbers = len(values) - sum(map(math.isnan, values))
        # Numbers keep their spellings where they may be categories: a categorical column, the target, a
        # chunk of a feature that is mostly text ("S", "M", "10").
        if self.spellings in ("all", "bounded") or (self.spellings == "auto" and n_numbers * 2 <= len(values)):
            code_of.update((t, self._code(t)) for t in numbers)
        code_of.update((t, self._code(t)) for t in others)
        self._nums.append(array("d", values))
        self._codes.append(array("i", map(code_of.__getitem__, stripped)))
        if self.spellings == "bounded" and len(self.texts) > SPELLINGS_KEPT:
            self._forget_number_spellings()

    def _forget_number_spellings(self) -> None:
        """Keep only the texts of cells that are not numbers (a target with this many values is a quantity)."""
        old = self.texts
        self.texts, self._index, self.spellings = [], {}, "values"
        remap = [-1 if _is_number(t) else self._code(t) for t in old]
        for codes in self._codes:
            for i, c in enumerate(codes or ()):
                if c >= 0:
                    codes[i] = remap[c]

    # -- after the last row
    def finish(self, delimiter: str) -> Column | TextColumn:
        """Read the cells that are numbers under a thousands-separator or decimal-comma format; a column
        whose every cell kept its text becomes a :class:`TextColumn`."""
        self._join()
        if self.spellings != "all" and self.codes is not None:
            self._read_number_format(delimiter)
        if self.codes is not None and (not len(self.codes) or min(self.codes) >= 0):
            return TextColumn(self)
        return self

    def _join(self) -> None:
        n = sum(map(len, self._nums))
        self.nums = array("d", [0.0]) * n if n else array("d")
        if any(c is not None for c in self._codes):
            self.codes = array("i", [-1]) * n if n else array("i")
        start = 0
        for nums, codes in zip(self._nums, self._codes):
            end = start + len(nums)
            self.nums[start:end] = nums
            if codes is not None:
                self.codes[start:end] = codes
            start = end
        self._nums, self._codes = [], []

    def _read_number_format(self, delimiter: str) -> None:
        others = {t for t in self.texts if any(ch.isdigit() for ch in t) and not _is_number(t)}
        if not others:
            return
        fmt = _choose_format(others, self.plain_dot, delimiter)
        if fmt is None:
            return
        self.number_format = fmt
        value = {}
        for k, t in enumerate(self.texts):
            if t in others or (fmt == COMMA_DECIMAL and _DOT_GROUPED.fullmatch(t)):
                x = parse_spelled(t, fmt)
                if x is not None:
                    value[k] = x
        codes, nums = self.codes, self.nums
        for i, c in enumerate(codes):
            if c in value:
                nums[i] = value[c]
                codes[i] = -1  # its spelling is rebuilt from the value: the column is numeric
        if self.int_spelled and any(not x.is_integer() or "," in self.texts[k] for k, x in value.items()):
            self.int_spelled = False

    def take(self, rows: Sequence[int]) -> Column:
        """The column restricted to ``rows`` (in that order)."""
        out = Column(self.name, self.spellings)
        out.nums = array("d", (self.nums[i] for i in rows))
        if self.codes is not None:
            out.codes = array("i", (self.codes[i] for i in rows))
        out.texts, out._index = self.texts, self._index
        out.int_spelled, out.plain_dot, out.number_format = self.int_spelled, self.plain_dot, self.number_format
        return out


def kept_texts(col: Column | TextColumn) -> list[tuple[int, str]]:
    """(first row, text) of each distinct text of ``col`` that is not a number, in file order."""
    if col.codes is None:
        return []
    others = {k for k, t in enumerate(col.texts) if not _is_number(t)}
    seen: dict[int, int] = {}
    for i, c in enumerate(col.codes):
        if c in others and c not in seen:
            seen[c] = i
    return [(i, col.texts[c]) for c, i in seen.items()]


class TextColumn(list):
    """A column whose every cell kept its text: a list of the (shared) distinct strings, so that reading
    it cell by cell is as fast as a list, with the codes for parsing and encoding by distinct text."""

    def __init__(self, column: Column):
        super().__init__(map(column.texts.__getitem__, column.codes))
        self.name, self.spellings, self.number_format = column.name, column.spellings, column.number_format
        self.codes, self.texts = column.codes, column.texts
        self.overflow = column.overflow

    def values(self) -> array:
        """Each cell's number (NaN where it is not one)."""
        lut = [_NAN if not _is_number(t) else float(t) for t in self.texts]
        return array("d", map(lut.__getitem__, self.codes))

    def take(self, rows: Sequence[int]) -> TextColumn:
        out = TextColumn.__new__(TextColumn)
        list.__init__(out, map(self.__getitem__, rows))
        out.name, out.spellings, out.number_format = self.name, self.spellings, self.number_format
        out.codes, out.texts, out.overflow = array("i", map(self.codes.__getitem__, rows)), self.texts, None
        return out


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# ----------------------------------------------------------------------------- the file
class RawTable:
    """A CSV file read into :class:`Column` objects: ``header``, ``columns`` (name -> Column), ``lines``
    (the file line each row starts on) and what was skipped (``blank_lines``, ``multiline_rows``)."""

    def __init__(self, path: str, key: str, delimiter: str, spellings: dict[str, str] | None = None):
        self.path, self.key, self.delimiter = path, key, delimiter
        self.blank_lines: list[int] = []
        self.multiline_rows: list[int] = []
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                self._read(f, spellings or {})
        except UnicodeDecodeError as e:
            raise DataError(f"{key}: {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise DataError(f"{key}: cannot read {path}: {e.strerror}") from None
        self._report()

    def _where(self, line: int) -> str:
        return f"{self.key}: {self.path} line {line}"

    def _read(self, f, spellings: dict[str, str]) -> None:
        key, path, delimiter = self.key, self.path, self.delimiter
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        start = 1
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise DataError(f"{self._where(start)}: {_quote_error(e)}") from None
        if header is None:
            raise DataError(f"{key}: {path} is empty; expected a header row of column names, then one row per example")
        self.header = [h.strip() for h in header]
        if len(self.header) == 1:
            _refuse_wrong_delimiter(path, key, delimiter)
        width = len(self.header)
        names = list(dict.fromkeys(self.header))
        if len(names) < width:
            from collections import Counter

            dup = next(h for h, n in Counter(self.header).items() if n > 1)
            raise DataError(f"{key}: {path} has the column name {dup!r} more than once")
        columns = [Column(h, spellings.get(h, "auto")) for h in self.header]
        self.lines = lines = array("l")
        chunk: list[list[str]] = []
        n_rows = 0

        def flush():
            nonlocal n_rows
            for col, cells in zip(columns, zip(*chunk)):
                col.add(cells, n_rows)
            n_rows += len(chunk)
            chunk.clear()

        while True:
            start = reader.line_num + 1
            try:
                row = next(reader, None)
            except csv.Error as e:
                raise DataError(f"{self._where(start)}: {_quote_error(e)}") from None
            if row is None:
                break
            if not row or (len(row) == 1 and not row[0].strip()):
                self.blank_lines.append(start)
                continue
            if reader.line_num != start:
                self._check_multiline(row, start, reader.line_num, width)
            if len(row) != width:
                raise DataError(
                    f"{self._where(start)} has {len(row)} fields, the header has {width} "
                    f"(delimiter {delimiter!r}; set dataset.delimiter if it differs)"
                )
            lines.append(start)
            chunk.append(row)
            if len(chunk) == CHUNK:
                flush()
        if chunk:
            flush()
        if not lines:
            raise DataError(f"{key}: {path} has a header but no data rows")
        self.columns = {}
        for c in columns:
            self.columns[c.name] = c.finish(delimiter)
            release_freed_memory()  # the column's chunks, now joined, are freed: give their pages back

    def _check_multiline(self, row: list[str], start: int, end: int, width: int) -> None:
        """A record over several lines is a quoted cell with line breaks: refused when those lines look
        like rows of the table (a stray quote closed by another one further down), else counted."""
        for cell in row:
            for part in cell.splitlines()[1:]:
                if width > 1 and part.count(self.delimiter) >= width - 1:
                    raise DataError(
                        f"{self._where(start)}: a quoted cell opened here runs to line {end} and swallows what "
                        f"look like rows ({part.strip()[:40]!r}); close the quote, or double a quote inside a "
                        f'quoted cell ("")'
                    )
        self.multiline_rows.append(start)

    def _report(self) -> None:
        if self.blank_lines:
            log.info("%s: %d blank line(s) skipped (%s)", self.path, len(self.blank_lines), _lines(self.blank_lines))
        if self.multiline_rows:
            log.info(
                "%s: %d row(s) hold a quoted cell with line breaks (starting on %s)",
                self.path,
                len(self.multiline_rows),
                _lines(self.multiline_rows),
            )
        for col in self.columns.values():
            if col.number_format:
                log.info("%s: column %r read as numbers written like %s", self.path, col.name, col.number_format)
            n = len(col)
            numbers = n - sum(map(math.isnan, col.values())) if col.codes is not None else n
            if col.overflow and col.spellings != "all" and numbers * 2 > n:
                row, text = col.overflow
                raise DataError(
                    f"{self._where(self.lines[row])}, column {col.name!r}: {text!r} is too large for a 32-bit "
                    f"float (at most 3.4e38 in size); fix the cell, or rescale the column"
                )
            if col.codes is not None and col.spellings == "auto" and 0 < numbers < n and numbers * 4 >= n:
                texts = kept_texts(col)
                if texts and numbers * 2 <= n:  # mostly text: read as categories; say which cells did it
                    shown = ", ".join(f"{t!r} (line {self.lines[i]})" for i, t in texts[:3])
                    log.warning(
                        "%s: column %r has %d numbers but is read as text because of %d other value(s): %s%s",
                        self.path,
                        col.name,
                        numbers,
                        len(texts),
                        shown,
                        "" if len(texts) <= 3 else ", ...",
                    )


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> None:
    """Hand the pages of freed small blocks back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    The chunks a column is read in are small blocks of the heap; once joined they are free, but glibc keeps
    their pages resident, so every column read would add its size to the peak a second time."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _lines(lines: Sequence[int]) -> str:
    return "line " + ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")


def _quote_error(e: csv.Error) -> str:
    msg = str(e)
    if "unexpected end of data" in msg or "EOF" in msg:
        return (
            "a quote opened in this row is never closed (the rest of the file would be one cell); "
            'close it, or double a quote inside a quoted cell ("")'
        )
    if "expected after" in msg:
        return f'a quoted cell has text after its closing quote; double a quote inside a quoted cell ("") ({msg})'
    return msg


CANDIDATES = [",", ";", "\t", "|"]


def _refuse_wrong_delimiter(path: str, key: str, delimiter: str) -> None:
    """The header read as one column: name the delimiter under which the first lines are a table."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            head = [line for _, line in zip(range(20), f)]
    except (OSError, UnicodeDecodeError):
        return
    for d in CANDIDATES:
        if d == delimiter:
            continue
        try:
            rows = [r for r in csv.reader(head, delimiter=d) if r]
        except csv.Error:
            continue
        widths = {len(r) for r in rows[:-1] or rows}  # the 20th line may be cut inside a quoted cell
        if len(widths) == 1 and widths.pop() > 1:
            name = "tab" if d == "\t" else d
            raise DataError(
                f"{key}: {path} reads as one column with the delimiter {delimiter!r} "
                f"(header {head[0].strip()[:60]!r}); it looks {name!r}-delimited: set dataset.delimiter={name!r}"
            )
