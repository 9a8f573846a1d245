"""Readers for the files users have: labelled texts and plain-text corpora.

Labelled texts come as
- a folder with one sub-folder per label holding one `.txt` (or `.text`, in any case) file per
  text (the aclImdb layout: `train/pos/0_9.txt`); a sub-folder named `unsup` is unlabelled and
  left out, names starting with "." are ignored, and any other file or folder is skipped and
  counted;
- CSV or TSV with a header row, JSONL: one record per row, the text and label in named fields;
- any of those files gzipped (`.jsonl.gz`, as in the data mirror);
- Parquet (`.parquet`, `.pq`; needs pyarrow: `pip install 'rnnkit[parquet]'`), the text and
  label in named columns.
Text files are read as UTF-8 (a byte-order mark dropped) unless another `encoding` is named; a
byte that does not decode is an error naming the file, line and byte offset. Rows with an empty text are skipped and
counted, and the report always says how many rows came from how many lines, so rows that a
stray quote merged show. A quoted TSV field may not span lines; a quoted CSV field may, but not
implausibly far. Every other problem is an error that names the file and line.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from rnnkit.errors import DataError
from rnnkit.files import ENCODING_HINT, READ_ERRORS, decode_lines, read_error, text_lines

TEXT_SUFFIXES = (".txt", ".text")
MAX_FIELD_LINES = 1000  # a quoted CSV field spanning more lines is taken for a stray quote,
MAX_SPANNING_CHARS = 100_000  # and so is a field over this long that spans lines
FIELD_LIMIT = 1 << 26  # characters in one CSV/TSV field (the csv module's default is 128 Ki)


@dataclass
class LabeledTexts:
    """The texts of a labelled file or folder, their labels, and what reading them met."""

    texts: list[str]
    labels: list[str]
    source: str
    rows: int = 0  # records read, skipped ones included (text files, for a folder)
    lines: int = 0  # lines of the file
    folders: int = 0  # label folders read (for a folder)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    spanning: list[str] = field(default_factory=list)  # "A-B": CSV rows spanning lines A to B
    origins: list[str] = field(default_factory=list)  # per text: "file:line" or its file

    def add(self, text: str, label: str, origin: str) -> None:
        self.texts.append(text)
        self.labels.append(label)
        self.origins.append(origin)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def report(self) -> str:
        """'train.tsv: read 400 rows from 401 lines; skipped 2 empty texts'."""
        if self.folders:
            text = f"{self.source}: read {self.rows:,} files from {self.folders} label folders"
        else:
            text = f"{self.source}: read {self.rows:,} rows from {self.lines:,} lines"
        if self.spanning:
            shown = ", ".join(self.spanning[:3]) + (", ..." if len(self.spanning) > 3 else "")
            verb = "row spans" if len(self.spanning) == 1 else "rows span"
            text += f" ({len(self.spanning):,} {verb} several lines: lines {shown})"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n:,} {why}" for why, n in self.skipped.items())
        return text


def _format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".ndjson", "jsonl"),
                        (".csv", "csv"), (".tsv", "tsv"), (".tab", "tsv"),
                        (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(suffix):
            if fmt == "parquet" and path.name.lower().endswith(".gz"):
                raise DataError(f"{path}: a Parquet file compresses itself; give it without "
                                "gzip")
            return fmt
    raise DataError(f"{path}: unknown format; use .csv, .tsv, .jsonl (optionally .gz), "
                    ".parquet or a folder with one sub-folder per label")


def _check_exists(path: Path) -> None:
    try:
        exists = path.exists()
    except OSError as exc:  # a folder on the way that may not be looked into
        raise read_error(path, exc) from None
    if not exists:
        raise DataError(f"{path}: no such file or folder")


def _label_key(value: object, where: str, label_field: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: empty label in field {label_field!r}; every training row "
                        "needs a label")
    if isinstance(value, (list, tuple, dict)):
        raise DataError(f"{where}: field {label_field!r} holds several labels ({value!r}); "
                        "rnnkit trains single-label classifiers: give one label per text "
                        "(a multi-label task is one binary classifier per label)")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: label {value!r} in field {label_field!r} must be a string "
                        "or a number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


# --- CSV, TSV, JSONL ------------------------------------------------------------------------


@dataclass
class _Table:
    rows: list[tuple[str, object, str]]  # (text, raw label or None, "file:line")
    lines: int
    spanning: list[str]


def _read_table(path: Path, text_field: str, label_field: str | None,
                encoding: str = "utf-8") -> _Table:
    fields = [text_field] + ([label_field] if label_field else [])
    fmt = _format(path)
    if fmt == "parquet":
        return _read_parquet(path, fields)
    if fmt == "jsonl":
        return _read_jsonl(path, fields, encoding)
    return _read_delimited(path, fields, "\t" if fmt == "tsv" else ",", encoding)


def _read_parquet(path: Path, fields: list[str]) -> _Table:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow: pip install "
                        "'rnnkit[parquet]'") from None
    try:
        schema = pq.read_schema(path)
    except READ_ERRORS as exc:
        raise read_error(path, exc) from None
    except pyarrow.ArrowException as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}); write it again") from None
    for name in fields:
        if name not in schema.names:
            raise DataError(f"{path}: no column {name!r} (columns: {', '.join(schema.names)}); "
                            "choose one with --text-field/--label-field")
    text_type = schema.field(fields[0]).type
    if not (pyarrow.types.is_string(text_type) or pyarrow.types.is_large_string(text_type)
            or pyarrow.types.is_string_view(text_type)):
        raise DataError(f"{path}: column {fields[0]!r} holds {text_type}, not text; choose the "
                        "text column with --text-field")
    try:
        table = pq.read_table(path, columns=fields)
    except READ_ERRORS as exc:
        raise read_error(path, exc) from None
    except pyarrow.ArrowException as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}); write it again") from None
    texts = table.column(0).to_pylist()
    labels = table.column(1).to_pylist() if len(fields) > 1 else [None] * len(texts)
    rows = [("" if text is None else text, label, f"{path}: row {i}")
            for i, (text, label) in enumerate(zip(texts, labels), 1)]
    return _Table(rows, len(rows), [])


def _read_jsonl(path: Path, fields: list[str], encoding: str = "utf-8") -> _Table:
    text_field, label_field = fields[0], fields[1] if len(fields) > 1 else None
    rows, line = [], 0
    for line, raw in enumerate(text_lines(path, encoding), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line}: expected a JSON object per line")
        for name in fields:
            if name not in record:
                raise DataError(f"{path}:{line}: no field {name!r} (fields: {', '.join(record)}); "
                                "choose one with --text-field/--label-field")
        text = record[text_field]
        if not isinstance(text, str):
            raise DataError(f"{path}:{line}: field {text_field!r} is not a string")
        rows.append((text, record.get(label_field) if label_field else None, f"{path}:{line}"))
    return _Table(rows, line, [])


def _read_delimited(path: Path, fields: list[str], delimiter: str,
                    encoding: str = "utf-8") -> _Table:
    lines = _Counted(text_lines(path, encoding))
    records = _records(path, lines, delimiter)
    header = next(records, ([], 0, 0))[0]
    for name in fields:
        if name not in header:
            raise DataError(f"{path}:1: no column {name!r} in the header "
                            f"({', '.join(header) or 'empty'}); choose one with "
                            "--text-field/--label-field")
    columns = [header.index(name) for name in fields]
    rows, spanning = [], []
    for values, start, end in records:
        where = f"{path}:{start}" if start == end else f"{path}:{start}-{end}"
        if end > start:
            _check_span(path, values, start, end, tsv=delimiter == "\t")
            spanning.append(f"{start}-{end}")
        if len(values) > len(header):
            raise DataError(f"{where}: more values ({len(values)}) than header columns "
                            f"({len(header)})")
        text = values[columns[0]] if columns[0] < len(values) else None
        if text is None:
            raise DataError(f"{where}: missing value for {fields[0]!r}")
        label = None
        if len(columns) > 1 and columns[1] < len(values):
            label = values[columns[1]]
        rows.append((text, label, where))
    return _Table(rows, lines.count, spanning)


# Fed to the CSV parser after the file's last line: it closes a quoted field that is still
# open there (a record that ends on it began with an unclosed quote) and is otherwise a
# record of its own, dropped.
_CLOSE = '"\n'


class _Counted:
    """The lines of a file, counted as they are read, then _CLOSE."""

    def __init__(self, lines: Iterator[str]):
        self.lines, self.count = lines, 0

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.count += 1
            yield line
        yield _CLOSE


def _records(path: Path, lines: _Counted, delimiter: str
             ) -> Iterator[tuple[list[str], int, int]]:
    """(values, first line, last line) of each CSV/TSV record, blank lines left out."""
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    reader = csv.reader(lines, delimiter=delimiter)
    end = 0
    try:
        for values in reader:
            start, end = end + 1, reader.line_num
            if end > lines.count:  # the record ends on _CLOSE
                if start <= lines.count:
                    raise DataError(f"{path}:{start}: a quoted field opened on line {start} "
                                    f"never closes (it runs to the end of the file, line "
                                    f"{lines.count}); remove the stray \" or close the field")
                return
            if values:
                yield values, start, end
    except csv.Error as exc:
        if "field limit" in str(exc):
            raise DataError(f"{path}:{end + 1}: a field from line {end + 1} on is longer than "
                            f"{FIELD_LIMIT:,} characters (a stray \" on line {end + 1}?)") \
                from None
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def _check_span(path: Path, values: list[str], start: int, end: int, tsv: bool) -> None:
    """A TSV record may not span lines; a CSV one not implausibly many, or a long way."""
    if tsv:
        raise DataError(f"{path}:{start}-{end}: a quoted field spans lines {start} to {end} "
                        f"(a stray \" on line {start}?); a TSV field cannot hold line breaks: "
                        "remove the quote, or use CSV or JSONL for texts with line breaks")
    longest = max(len(v) for v in values)
    if end - start + 1 > MAX_FIELD_LINES or longest > MAX_SPANNING_CHARS:
        raise DataError(f"{path}:{start}-{end}: a quoted field spans {end - start + 1:,} lines "
                        f"({longest:,} characters), too much for one text (a stray \" on line "
                        f"{start}?); remove the quote or close the field where the text ends")


# --- readers --------------------------------------------------------------------------------


def read_labeled(path: Path | str, text_field: str = "text", label_field: str = "label",
                 encoding: str = "utf-8") -> LabeledTexts:
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return _read_folder(path, encoding)
    table = _read_table(path, text_field, label_field, encoding)
    out = LabeledTexts([], [], str(path), rows=len(table.rows), lines=table.lines,
                       spanning=table.spanning)
    for text, label, where in table.rows:
        if not text.strip():
            out.skip("empty texts")
            continue
        out.add(text, _label_key(label, where, label_field), where)
    if not out.texts:
        raise DataError(f"{path}: no texts to read")
    return out


def _read_folder(root: Path, encoding: str = "utf-8") -> LabeledTexts:
    out = LabeledTexts([], [], str(root))
    others: Counter[str] = Counter()  # skipped entries of label folders, by kind
    empty: list[str] = []
    for entry in _listing(root):
        if entry.name == "unsup":
            out.skip("unlabelled folders (unsup)")
        elif not entry.is_dir():
            out.skip("files beside the label folders")
        elif _read_label_folder(Path(entry.path), out, others, encoding):
            out.folders += 1
        else:
            empty.append(entry.name)
    if others:
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(others.items()))
        out.skip(f"entries of label folders not named *.txt ({kinds})", sum(others.values()))
    if empty:
        out.skip(f"label folders without text files ({', '.join(empty)})", len(empty))
    if not out.texts:
        raise DataError(f"{root}: no labelled texts; expected sub-folders named by label "
                        "holding .txt files (e.g. pos/ and neg/)")
    return out


def _read_label_folder(folder: Path, out: LabeledTexts, others: Counter[str],
                       encoding: str = "utf-8") -> int:
    """Add the texts of one label folder to `out`; the number of text files it holds."""
    files = 0
    for entry in _listing(folder):
        suffix = os.path.splitext(entry.name)[1]
        if entry.is_dir() or suffix.lower() not in TEXT_SUFFIXES:
            others["folders" if entry.is_dir() else suffix or "without extension"] += 1
            continue
        files += 1
        file = Path(entry.path)
        text = _read_text_file(file, encoding)
        if text.strip():
            out.add(text, folder.name, str(file))
        else:
            out.skip("empty texts")
    out.rows += files
    return files


def _listing(folder: Path) -> list[os.DirEntry]:
    """A folder's entries by name, those whose names start with "." left out."""
    try:
        with os.scandir(folder) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")),
                          key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"{folder}: cannot read the folder ({exc.strerror or exc}); fix its "
                        "permissions or move it out of the data folder") from None


def _read_text_file(file: Path, encoding: str = "utf-8") -> str:
    try:
        data = file.read_bytes()
    except READ_ERRORS as exc:
        raise read_error(file, exc) from None
    return "".join(decode_lines(data.splitlines(keepends=True), str(file), encoding=encoding))


def read_texts(path: Path | str, text_field: str = "text", encoding: str = "utf-8"
               ) -> list[str]:
    """Unlabelled texts: a .txt file (one per line; '-' is standard input) or a CSV, TSV,
    JSONL or Parquet file's text field."""
    if str(path) == "-" or Path(path).name.lower().removesuffix(".gz").endswith(".txt"):
        return [line for line in read_lines(path, encoding) if line.strip()]
    path = Path(path)
    _check_exists(path)
    return [text for text, _, _ in _read_table(path, text_field, None, encoding).rows]


def read_lines(path: Path | str, encoding: str = "utf-8") -> list[str]:
    """All lines of a text file (plain or .gz), without line ends or a byte-order mark; '-'
    reads standard input's bytes, in the same encoding, whatever the locale."""
    if str(path) == "-":
        return [line.rstrip("\r\n") for line in _stdin_lines(encoding)]
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a text file")
    return [line.rstrip("\r\n") for line in text_lines(path, encoding)]


def _stdin_lines(encoding: str = "utf-8") -> list[str]:
    raw = getattr(sys.stdin, "buffer", None)
    try:
        if raw is None:  # a text stream put in its place (an embedding program): already text
            lines = list(sys.stdin)
            return [lines[0].removeprefix("\ufeff")] + lines[1:] if lines else []
        return list(decode_lines(raw, "standard input", ENCODING_HINT, encoding))
    except OSError as exc:
        raise read_error("standard input", exc) from None
