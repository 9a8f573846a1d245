"""Reading users' files as they really come: stray quotes, damaged gzip, odd folders, BOMs,
long fields, upper-case names, standard input in another encoding."""

import gzip
import io
import os
import random
import re
import struct
import sys
import zlib
from pathlib import Path

import pytest

from rnnkit.data import sources
from rnnkit.data.embeddings import read_vectors
from rnnkit.errors import DataError
from rnnkit.files import text_lines
from rnnkit.data.readers import read_labeled, read_lines, read_texts
from conftest import make_reviews, write_jsonl


def _tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


# --- rows merged by quotes ------------------------------------------------------------------


def test_stray_quotes_merging_tsv_rows_are_refused_with_their_lines(tmp_path):
    rows = make_reviews(400)
    rows[20] = ('"' + rows[20][0], rows[20][1])  # row 21 is line 22 (after the header)
    rows[200] = (rows[200][0] + ' "', rows[200][1])  # row 201 closes it on line 202
    with pytest.raises(DataError, match=r'h\.tsv:22-202: a quoted field spans lines 22 to 202 '
                                        r'\(a stray " on line 22\?\)'):
        read_labeled(_tsv(tmp_path / "h.tsv", rows))


@pytest.mark.parametrize("name", ["u.tsv", "u.csv"])
def test_an_unclosed_quote_names_the_line_it_opened(tmp_path, name):
    sep = "\t" if name.endswith(".tsv") else ","
    lines = [f"text{sep}label"] + [f"row {i}{sep}{i % 2}" for i in range(1, 10)]
    lines[5] = f'"row 5 never closed{sep}1'
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{name}:6: a quoted field opened on line 6 never "
                                        r"closes \(it runs to the end of the file, line 10\)"):
        read_labeled(tmp_path / name)


def test_every_report_counts_rows_and_lines(tmp_path):
    out = read_labeled(_tsv(tmp_path / "t.tsv", make_reviews(400)))
    assert (out.rows, out.lines) == (400, 401)
    assert out.report() == f"{tmp_path / 't.tsv'}: read 400 rows from 401 lines"
    write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 1}, {"text": "", "label": 0}])
    with open(tmp_path / "t.jsonl", "a") as f:
        f.write("\n")
    assert read_labeled(tmp_path / "t.jsonl").report().endswith(
        "read 2 rows from 3 lines; skipped 1 empty texts")


def test_csv_rows_spanning_lines_are_read_and_reported(tmp_path):
    (tmp_path / "m.csv").write_text('text,label\nfine,1\n"two\nparagraphs",0\n"three\n\nhere",1\n')
    out = read_labeled(tmp_path / "m.csv")
    assert out.texts == ["fine", "two\nparagraphs", "three\n\nhere"]
    assert out.report().endswith("read 3 rows from 7 lines (2 rows span several lines: lines "
                                 "3-4, 5-7)")


@pytest.mark.parametrize("lines,chars", [(1500, 10), (3, 60_000)])
def test_csv_fields_spanning_too_far_are_refused(tmp_path, lines, chars):
    body = "\n".join("x" * chars for _ in range(lines))
    (tmp_path / "f.csv").write_text(f'text,label\nok,1\n"{body}",0\n')
    with pytest.raises(DataError, match=rf"f\.csv:3-{lines + 2}: a quoted field spans "
                                        rf"{lines:,} lines .*a stray \" on line 3\?"):
        read_labeled(tmp_path / "f.csv")


@pytest.mark.parametrize("name", ["big.csv", "big.tsv"])
def test_fields_over_128k_on_one_line_are_read(tmp_path, name):
    sep = "\t" if name.endswith(".tsv") else ","
    long = "word " * 40_000  # 200,000 characters
    (tmp_path / name).write_text(f"text{sep}label\n{long}{sep}1\nshort{sep}0\n")
    assert read_labeled(tmp_path / name).texts == [long, "short"]


# --- damaged gzip ---------------------------------------------------------------------------


def _gzip_bytes(path: Path) -> bytes:
    """Some rows of what the file's name says it holds, gzipped."""
    rng = random.Random(0)
    if ".bin" in path.name:
        data = b"2000 2\n" + b"".join(b"w%d " % i + struct.pack("<2f", rng.random(), i) + b"\n"
                                      for i in range(2000))
    else:
        data = "".join(f'{{"text": "line {i} {rng.random()}", "label": {i % 2}}}\n'
                       for i in range(2000)).encode()
    return gzip.compress(data, mtime=0)


def _corrupt(path: Path) -> Path:
    data = bytearray(_gzip_bytes(path))
    for k in range(30, 38):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(zlib.error), gzip.open(path) as f:  # what the readers meet
        f.read()
    return path


def _truncated(path: Path) -> Path:
    data = _gzip_bytes(path)
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("damage,match", [(_corrupt, "corrupt gzip data"),
                                          (_truncated, "truncated")])
def test_damaged_gzip_is_one_error_naming_the_file(tmp_path, damage, match):
    jsonl = damage(tmp_path / "d.jsonl.gz")
    calls = [lambda: list(text_lines(jsonl)), lambda: read_lines(jsonl),
             lambda: read_labeled(jsonl), lambda: read_texts(jsonl),
             lambda: read_vectors(damage(tmp_path / "v.txt.gz"), {"the"}),
             lambda: read_vectors(damage(tmp_path / "v.bin.gz"), {"the"})]
    for call in calls:
        with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path))}/\w\.\w+\.gz: .*{match}"):
            call()


def test_a_damaged_download_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RNNKIT_MIRROR", raising=False)
    download = sources.Download("http://127.0.0.1:9/a.tar.gz",
                                 build=sources._imdb_from_tar("train"))
    ds = sources.Dataset("toy", "classification", files={"train": "toy/train.jsonl.gz"},
                          sources={"train": download})
    monkeypatch.setitem(sources.DATASETS, "toy", ds)
    archive = _corrupt(tmp_path / "a.tar.gz")
    monkeypatch.setattr(sources, "_download", lambda source, target: archive)
    with pytest.raises(DataError, match=r"a\.tar\.gz: cannot unpack it .*delete it"):
        sources.resolve("toy", "train")


# --- label folders --------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_folder_reads_txt_in_any_case_and_counts_what_it_skips(tmp_path):
    root = _tree(tmp_path / "train", {
        "pos/1.txt": "good", "pos/2.TXT": "great", "pos/3.text": "fine", "pos/notes.md": "x",
        "neg/1.txt": "bad", "neg/2.Txt": "awful", "neg/3.txt": " ", "neg/.hidden.txt": "x",
        "neutral/README": "x", "urls.txt": "x", ".ipynb_checkpoints/1.txt": "x",
        "unsup/1.txt": "x"})
    (root / "empty").mkdir()
    out = read_labeled(root)
    assert sorted(zip(out.labels, out.texts)) == [("neg", "awful"), ("neg", "bad"),
                                                  ("pos", "fine"), ("pos", "good"),
                                                  ("pos", "great")]
    assert out.report() == (
        f"{root}: read 6 files from 2 label folders; skipped 1 empty texts, 1 unlabelled "
        "folders (unsup), 1 files beside the label folders, 2 entries of label folders not "
        "named *.txt (1 .md, 1 without extension), 2 label folders without text files "
        "(empty, neutral)")


def _refuse(monkeypatch, name: str, target: Path) -> None:
    """Make the OS refuse `name` (open or scandir) on `target`, as a chmod would for a user
    other than root; the tests run as root in CI, where chmod would not bite."""
    real = getattr(Path, "open") if name == "open" else os.scandir

    def refused(*args, **kwargs):
        if args and str(args[0]) == str(target):
            raise PermissionError(13, "Permission denied", str(target))
        return real(*args, **kwargs)

    if name == "open":
        monkeypatch.setattr(Path, "open", refused)
    else:
        monkeypatch.setattr(os, "scandir", refused)


def test_an_unreadable_file_or_label_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    root = _tree(tmp_path / "train", {"pos/1.txt": "good", "neg/1.txt": "bad",
                                      "mid/1.txt": "so so"})
    with monkeypatch.context() as m:
        _refuse(m, "open", root / "neg" / "1.txt")
        with pytest.raises(DataError, match=r"neg/1\.txt: cannot read \(Permission denied\)"):
            read_labeled(root)
    with monkeypatch.context() as m:
        _refuse(m, "scandir", root / "mid")
        with pytest.raises(DataError, match=r"train/mid: cannot read the folder \(Permission "
                                            r"denied\)"):
            read_labeled(root)
    assert sorted(set(read_labeled(root).labels)) == ["mid", "neg", "pos"]


# --- byte-order marks, names in upper case, field sizes -------------------------------------


def test_a_utf8_bom_is_dropped_by_every_reader(tmp_path):
    bom = "\ufeff"
    (tmp_path / "b.csv").write_text(bom + "text,label\ngood,1\n", encoding="utf-8")
    (tmp_path / "b.tsv").write_text(bom + "text\tlabel\ngood\t1\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(bom + '{"text": "good", "label": 1}\n', encoding="utf-8")
    (tmp_path / "b.txt").write_text(bom + "good\nbad\n", encoding="utf-8")
    _tree(tmp_path / "tree", {"pos/1.txt": bom + "good", "neg/1.txt": "bad"})
    for name in ("b.csv", "b.tsv", "b.jsonl"):
        assert read_labeled(tmp_path / name).texts == ["good"], name
    assert read_lines(tmp_path / "b.txt") == read_texts(tmp_path / "b.txt") == ["good", "bad"]
    assert sorted(read_labeled(tmp_path / "tree").texts) == ["bad", "good"]


def test_upper_case_names_are_decompressed(tmp_path):
    with gzip.open(tmp_path / "x.JSONL.GZ", "wt") as f:
        f.write('{"text": "fine", "label": 1}\n')
    with gzip.open(tmp_path / "c.TXT.GZ", "wt") as f:
        f.write("one\ntwo\n")
    with gzip.open(tmp_path / "v.BIN.GZ", "wb") as f:
        f.write(b"1 2\ncat " + struct.pack("<2f", 1, 2) + b"\n")
    assert read_labeled(tmp_path / "x.JSONL.GZ").texts == ["fine"]
    assert read_lines(tmp_path / "c.TXT.GZ") == ["one", "two"]
    assert read_vectors(tmp_path / "v.BIN.GZ", {"cat"})[0]["cat"].tolist() == [1, 2]


# --- standard input -------------------------------------------------------------------------


def _stdin(monkeypatch, data: bytes, locale_encoding: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data),
                                                       encoding=locale_encoding))


def test_standard_input_is_utf8_whatever_the_locale(monkeypatch):
    _stdin(monkeypatch, b"fine\ncaf\xe9\n", "latin-1")
    with pytest.raises(DataError, match="standard input:2: not valid UTF-8"):
        read_lines("-")
    _stdin(monkeypatch, "\ufeffcafé\nnaïve\n".encode(), "ascii")
    assert read_lines("-") == ["café", "naïve"]
    _stdin(monkeypatch, b"one\n\ntwo\n", "ascii")
    assert read_texts("-") == ["one", "two"]


# --- other encodings ------------------------------------------------------------------------


def test_a_file_in_another_encoding_names_the_byte_and_the_flag(tmp_path):
    path = tmp_path / "zh.tsv"
    path.write_bytes("text\tlabel\n很好\t1\n太差了\t0\n".encode("gbk"))
    # Line 2 starts at byte 11; its first byte (0xba of 很) is not UTF-8.
    with pytest.raises(DataError, match=r"zh\.tsv:2: not valid UTF-8 \(byte 0xba at byte "
                                        r"offset 11\); .*--encoding \(gbk"):
        read_labeled(path)
    out = read_labeled(path, encoding="gbk")
    assert out.texts == ["很好", "太差了"] and out.labels == ["1", "0"]
    gz = tmp_path / "sj.txt.gz"
    gz.write_bytes(gzip.compress("一行目\nカタカナ\n".encode("shift_jis")))
    assert read_lines(gz, "shift_jis") == ["一行目", "カタカナ"]
    with pytest.raises(DataError, match=r"sj\.txt\.gz:1: not valid UTF-8"):
        read_lines(gz)


def test_encoding_setting_is_checked_and_reaches_the_readers(tmp_path):
    from rnnkit.config import DataConfig
    from rnnkit.data.splits import load_classification
    from rnnkit.errors import UsageError

    with pytest.raises(UsageError, match="'klingon' is not an encoding"):
        DataConfig(encoding="klingon")
    with pytest.raises(UsageError, match="UTF-16/32 are not read"):
        DataConfig(encoding="utf-16")
    rows = "text\tlabel\n" + "".join(f"{'très bon' if i % 2 else 'mauvais'} {i}\t{i % 2}\n"
                                     for i in range(40))
    (tmp_path / "fr.tsv").write_bytes(rows.encode("latin-1"))
    cfg = DataConfig(train=str(tmp_path / "fr.tsv"), encoding="latin-1")
    data = load_classification(cfg, seed=1, want=("train", "valid"))
    assert "très" in data.vocab.stoi


# --- Parquet --------------------------------------------------------------------------------


def test_parquet_files_read_like_the_other_tables(tmp_path):
    pa = pytest.importorskip("pyarrow")  # a dev dependency: installed wherever tests run
    import pyarrow.parquet as pq

    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"review": ["好吃", None, "", "太差"], "y": [1, 0, 0, 0],
                             "other": [1.0, 2.0, 3.0, 4.0]}), path)
    out = read_labeled(path, "review", "y")
    assert out.texts == ["好吃", "太差"] and out.labels == ["1", "0"]
    assert "skipped 2 empty texts" in out.report()
    assert read_texts(path, "review") == ["好吃", "", "", "太差"]  # a corpus keeps its rows
    with pytest.raises(DataError, match=r"reviews\.parquet: no column 'text' \(columns: review, "
                                        r"y, other\); choose one with --text-field"):
        read_labeled(path)
    with pytest.raises(DataError, match=r"column 'other' holds double, not text"):
        read_labeled(path, "other", "y")
    multi = tmp_path / "multi.parquet"
    pq.write_table(pa.table({"text": ["a b", "c d"], "label": [["x", "y"], ["x"]]}), multi)
    with pytest.raises(DataError, match=r"multi\.parquet: row 1: field 'label' holds several "
                                        r"labels"):
        read_labeled(multi)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable Parquet file"):
        read_labeled(broken)
