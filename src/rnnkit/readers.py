"""Readers for the files users have: labelled texts and plain-text corpora.

Labelled texts come as
- a folder with one sub-folder per label holding one `.txt` file per text (the aclImdb
  layout: `train/pos/0_9.txt`); a sub-folder named `unsup` is unlabelled and left out;
- CSV or TSV with a header row, JSONL: one record per row, the text and label in named fields;
- any of those files gzipped (`.jsonl.gz`, as in the data mirror).
Rows with an empty text are skipped and counted; every other problem is an error that names
the file and line.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from rnnkit.errors import DataError
from rnnkit.io import text_lines


@dataclass
class LabeledTexts:
    texts: list[str]
    labels: list[str]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)

    def report(self) -> str | None:
        if not self.skipped:
            return None
        parts = ", ".join(f"{n} {reason}" for reason, n in self.skipped.items())
        return f"{self.source}: skipped {parts}"


def _format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".ndjson", "jsonl"),
                        (".csv", "csv"), (".tsv", "tsv"), (".tab", "tsv")):
        if name.endswith(suffix):
            return fmt
    raise DataError(f"{path}: unknown format; use .csv, .tsv, .jsonl (optionally .gz) or a "
                    "folder with one sub-folder per label")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")


def _label_key(value: object, where: str, label_field: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: empty label in field {label_field!r}; every training row "
                        "needs a label")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: label {value!r} in field {label_field!r} must be a string "
                        "or a number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _rows(path: Path, fmt: str, text_field: str, label_field: str | None
          ) -> Iterator[tuple[str, object, str]]:
    """Yield (text, raw label, 'file:line') for each row."""
    fields = [text_field] + ([label_field] if label_field else [])
    if fmt == "jsonl":
        yield from _jsonl_rows(path, fields)
        return
    reader = csv.DictReader(text_lines(path), delimiter="\t" if fmt == "tsv" else ",")
    try:
        header = reader.fieldnames or []
        for name in fields:
            if name not in header:
                raise DataError(f"{path}:1: no column {name!r} in the header "
                                f"({', '.join(header) or 'empty'}); choose one with "
                                "--text-field/--label-field")
        for record in reader:
            where = f"{path}:{reader.line_num}"
            if None in record:
                raise DataError(f"{where}: more values than header columns")
            text = record[text_field]
            if text is None:
                raise DataError(f"{where}: missing value for {text_field!r}")
            yield text, record.get(label_field) if label_field else None, where
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def _jsonl_rows(path: Path, fields: list[str]) -> Iterator[tuple[str, object, str]]:
    text_field, label_field = fields[0], fields[1] if len(fields) > 1 else None
    for line, raw in enumerate(text_lines(path), 1):
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
                raise DataError(f"{path}:{line}: no field {name!r} (fields: "
                                f"{', '.join(record)}); choose one with --text-field/--label-field")
        text = record[text_field]
        if not isinstance(text, str):
            raise DataError(f"{path}:{line}: field {text_field!r} is not a string")
        yield text, record.get(label_field) if label_field else None, f"{path}:{line}"


def read_labeled(path: Path | str, text_field: str = "text", label_field: str = "label"
                 ) -> LabeledTexts:
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return _read_folder(path)
    out = LabeledTexts([], [], str(path))
    for text, label, where in _rows(path, _format(path), text_field, label_field):
        if not text.strip():
            out.skipped["empty texts"] = out.skipped.get("empty texts", 0) + 1
            continue
        out.texts.append(text)
        out.labels.append(_label_key(label, where, label_field))
    if not out.texts:
        raise DataError(f"{path}: no texts to read")
    return out


def _read_folder(root: Path) -> LabeledTexts:
    out = LabeledTexts([], [], str(root))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "unsup")
    for folder in folders:
        for file in sorted(folder.glob("*.txt")):
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{file}: not valid UTF-8; re-save the file as UTF-8") from None
            if not text.strip():
                out.skipped["empty texts"] = out.skipped.get("empty texts", 0) + 1
                continue
            out.texts.append(text)
            out.labels.append(folder.name)
    if not out.texts:
        raise DataError(f"{root}: no labelled texts; expected sub-folders named by label "
                        "holding .txt files (e.g. pos/ and neg/)")
    return out


def read_texts(path: Path | str, text_field: str = "text") -> list[str]:
    """Unlabelled texts: a .txt file (one per line) or a CSV/TSV/JSONL file's text field."""
    path = Path(path)
    _check_exists(path)
    if path.name.lower().removesuffix(".gz").endswith(".txt") or path.name == "-":
        return [line for line in read_lines(path) if line.strip()]
    return [text for text, _, _ in _rows(path, _format(path), text_field, None)]


def read_lines(path: Path | str) -> list[str]:
    """All lines of a UTF-8 text file (plain or .gz); '-' reads standard input."""
    if str(path) == "-":
        try:
            return sys.stdin.read().splitlines()
        except UnicodeDecodeError:
            raise DataError("standard input: not valid UTF-8") from None
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a text file")
    return [line.rstrip("\r\n") for line in text_lines(path)]
