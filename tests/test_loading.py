"""From files to splits (rnnkit.data): what the notes say, what is skipped, which file a
message names, and an RNNKIT_HOME that cannot be written."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from rnnkit.config import DataConfig
from rnnkit.data import sources
from rnnkit.data.splits import load_classification, load_corpus
from rnnkit.errors import DataError, UsageError
from conftest import NEG, POS, make_reviews, write_jsonl


def _tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


def test_notes_say_rows_read_from_lines_per_split(tsv_data):
    cfg = DataConfig(train=str(tsv_data["train"]), valid=str(tsv_data["dev"]),
                     text_field="sentence")
    data = load_classification(cfg, 0, ("train", "valid"))
    assert data.notes == [f"train: {tsv_data['train']}: read 400 rows from 401 lines",
                          f"valid: {tsv_data['dev']}: read 100 rows from 101 lines"]


def test_an_unseen_label_in_a_valid_file_names_that_file(tmp_path, tsv_data):
    valid = tmp_path / "valid.tsv"
    valid.write_text("sentence\tlabel\ngreat fun\tpos\nmeh\tneutral\n")
    cfg = DataConfig(train=str(tsv_data["train"]), valid=str(valid), text_field="sentence")
    with pytest.raises(DataError, match=rf"^{re.escape(str(valid))}: label 'neutral' \(valid "
                                        r"split\) was not seen in training"):
        load_classification(cfg, 0)


def test_texts_without_tokens_are_skipped_in_every_split_labels_aligned(tmp_path):
    rows = make_reviews(300)
    paths = {}
    for split, part in (("train", rows[:200]), ("valid", rows[200:250]), ("test", rows[250:])):
        # A text the basic tokenizer reads as nothing, after every 7th row, labels alternating.
        mixed = []
        for i, row in enumerate(part):
            mixed.append(row)
            if i % 7 == 0:
                mixed.append(("<br /><br />", "pos" if i % 2 else "neg"))
        paths[split] = _tsv(tmp_path / f"{split}.tsv", mixed)
    cfg = DataConfig(**{split: str(path) for split, path in paths.items()})
    for attempt in ("tokenized", "cached"):
        data = load_classification(cfg, 0)
        for split, n in (("train", 200), ("valid", 50), ("test", 50)):
            part = data.splits[split]
            assert len(part.ids) == len(part.labels) == n, (attempt, split)
            for ids, label in zip(part.ids, part.labels):
                words = set(data.vocab.decode(ids))
                assert data.classes[label] == ("pos" if words & set(POS) else "neg")
                assert not words & set(POS if data.classes[label] == "neg" else NEG)
        for note, (split, rows, tokenless) in zip(data.notes, (("train", 229, 29),
                                                               ("valid", 58, 8),
                                                               ("test", 58, 8))):
            assert note == (f"{split}: {paths[split]}: read {rows} rows from {rows + 1} lines; "
                            f"skipped {tokenless} texts with no tokens after tokenization "
                            f"(the first: {paths[split]}:3)"), attempt


def test_valid_fraction_0_asks_for_a_valid_file(tsv_data, corpus_files):
    with pytest.raises(UsageError, match="--valid-fraction 0 needs --valid FILE"):
        load_classification(DataConfig(train=str(tsv_data["train"]), text_field="sentence",
                                       valid_fraction=0), 0)
    with pytest.raises(UsageError, match="--valid-fraction 0 needs --valid FILE"):
        load_corpus(DataConfig(train=str(corpus_files["train"]), valid_fraction=0))


def test_an_unwritable_home_skips_the_token_cache_with_a_note(tmp_path, monkeypatch, tsv_data):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("RNNKIT_HOME", str(tmp_path / "a-file" / "home"))  # even root cannot
    cfg = DataConfig(train=str(tsv_data["train"]), text_field="sentence")
    data = load_classification(cfg, 0, ("train", "valid"))
    assert len(data.splits["train"].ids) == 360
    assert re.search(r"; tokens not cached: cannot write .*a-file/home/cache/labeled \(.*\); "
                     "set RNNKIT_HOME to a writable folder$", data.notes[0])


def test_an_unwritable_home_stops_a_download_with_one_line(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("RNNKIT_HOME", str(tmp_path / "a-file" / "home"))
    monkeypatch.delenv("RNNKIT_MIRROR", raising=False)
    ds = sources.Dataset("toy", "corpus", files={"train": "toy/train.txt"},
                          sources={"train": sources.Download("http://127.0.0.1:9/train.txt")})
    monkeypatch.setitem(sources.DATASETS, "toy", ds)
    with pytest.raises(UsageError, match=r"a-file/home/downloads: cannot write there \(.*\); "
                                         "set RNNKIT_HOME to a writable folder"):
        sources.resolve("toy", "train")


def test_only_rnnkit_files_reads_rnnkit_home():
    src = Path(sources.__file__).parent.parent  # the rnnkit package
    reading = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.py")
                     if re.search(r"(environ|getenv)\W[^\n]*RNNKIT_HOME", p.read_text()))
    assert reading == ["files.py"]  # everyone else asks files.rnnkit_home() (sources.home)


def test_language_model_corpus_from_table_files_and_extra_train(tmp_path, monkeypatch):
    """A corpus can be the text field of JSONL files (one text a line, inner line breaks as
    spaces), with more training text after it (`extra_train`, files or dataset:split)."""
    from rnnkit.config import DataConfig
    from rnnkit.data.splits import load_corpus
    from rnnkit.data.sources import source_path

    first = tmp_path / "a.jsonl"
    first.write_text('{"text": "the cat sat", "label": 1}\n{"text": "a dog\\nran", "label": 0}\n')
    second = tmp_path / "b.txt"
    second.write_text("the bird sang\nthe cat ran\n")
    cfg = DataConfig(train=str(first), extra_train=str(second), valid_fraction=0.25)
    data = load_corpus(cfg, ("train", "valid"))
    words = lambda ids: [data.vocab.itos[i] for i in ids]  # noqa: E731
    train = "the cat sat <eos> a dog ran <eos> the bird sang <eos>"
    assert words(data.splits["train"]) == train.split()
    assert words(data.splits["valid"]) == "the cat ran <eos>".split()  # the closing line
    monkeypatch.setenv("RNNKIT_MIRROR", str(tmp_path / "mirror"))
    (tmp_path / "mirror" / "imdb").mkdir(parents=True)
    (tmp_path / "mirror" / "imdb" / "unsup.jsonl.gz").write_bytes(b"")
    assert source_path("imdb:unsup").name == "unsup.jsonl.gz"
    assert source_path("notes:2024.txt") == Path("notes:2024.txt")  # not a dataset name


def _reference_corpus(cfg, lines_train, lines_valid):
    """The splits as rnnkit 0.2.0 built them: token lists in memory, Vocab.build."""
    from rnnkit.data.splits import LM_SPECIALS, corpus_tokens
    from rnnkit.data.vocab import Vocab

    train, valid = corpus_tokens(lines_train, cfg), corpus_tokens(lines_valid, cfg)
    vocab = Vocab.build([train], LM_SPECIALS, cfg.min_freq, cfg.max_vocab)
    return vocab, vocab.encode(train), vocab.encode(valid)


@pytest.mark.parametrize("tokenizer", ["basic", "char", "whitespace"])
def test_cached_corpus_ids_equal_the_in_memory_ones_and_are_reused(tmp_path, monkeypatch,
                                                                   tokenizer):
    from rnnkit.config import DataConfig
    from rnnkit.data import corpus_cache
    from rnnkit.data.splits import load_corpus

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)] + ["Don't", "stop", "好", "吃", "."]
    lines = [" ".join(rng.choice(words, size=rng.integers(0, 12))) for _ in range(400)]
    extra = [" ".join(rng.choice(words, size=rng.integers(1, 8))) for _ in range(50)]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    write_jsonl(tmp_path / "b.jsonl", [{"text": t} for t in extra])
    cfg = DataConfig(train=str(tmp_path / "a.txt"), extra_train=str(tmp_path / "b.jsonl"),
                     tokenizer=tokenizer, min_freq=2, max_vocab=200)
    data = load_corpus(cfg, ("train", "valid"))
    every = lines + extra
    n_train = len(every) - max(1, int(len(every) * cfg.valid_fraction))
    vocab, train, valid = _reference_corpus(cfg, every[:n_train], every[n_train:])
    assert data.vocab.itos == vocab.itos
    assert data.splits["train"].tolist() == train and data.splits["valid"].tolist() == valid
    # A second run reads the memory-mapped cache: nothing is tokenized again.
    monkeypatch.setattr(corpus_cache, "tokenize_lines", lambda *a: pytest.fail("tokenized"))
    again = load_corpus(cfg, ("train", "valid"))
    assert again.vocab.itos == vocab.itos and again.splits["train"].tolist() == train
    assert isinstance(corpus_cache.load(tmp_path / "a.txt", cfg).ids, np.memmap)
    # An edited file is tokenized again (the key is its content).
    (tmp_path / "a.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(pytest.fail.Exception):
        load_corpus(cfg, ("train", "valid"))


@pytest.mark.parametrize("tokenizer", ["basic", "char"])
def test_tokenizing_in_several_processes_gives_what_one_process_gives(tmp_path, monkeypatch,
                                                                     tokenizer):
    from rnnkit.config import DataConfig
    from rnnkit.data import corpus_cache
    from rnnkit.files import rnnkit_home

    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(500)] + ["Don't", "好", "吃", "é", "."]
    lines = [" ".join(rng.choice(words, size=rng.integers(0, 15))) for _ in range(3000)]
    # a byte-order mark, Windows line ends and no line break at the very end
    body = "\ufeff" + "\r\n".join(lines[:1500]) + "\n" + "\n".join(lines[1500:])
    path = tmp_path / "corpus.txt"
    path.write_bytes(body.encode("utf-8"))
    cfg = DataConfig(train=str(path), tokenizer=tokenizer)
    one = corpus_cache.tokenize_lines(corpus_cache.raw_lines(path, cfg), cfg, None)
    ranges = corpus_cache.line_ranges(path, 3)
    raw = path.read_bytes()
    assert ranges[0][0] == 0 and ranges[-1][1] == len(raw) and len(ranges) == 3
    assert all(raw[a - 1:a] == b"\n" for a, _ in ranges[1:])
    monkeypatch.setenv("RNNKIT_TOKENIZE_PROCESSES", "3")
    assert corpus_cache.tokenize_processes(path, cfg) == 3
    many = corpus_cache.load(path, cfg)
    assert isinstance(many.ids, np.memmap)  # written by the processes, read from the cache
    assert many.tokens == one.tokens
    assert np.array_equal(many.ids, one.ids)
    assert np.array_equal(many.line_ends, one.line_ends)
    assert np.array_equal(many.words, one.words)
    assert not list((rnnkit_home() / "cache" / "corpus").glob(".*"))  # no stage left


def test_a_bad_byte_in_a_later_range_is_reported_at_its_line_of_the_file(tmp_path,
                                                                          monkeypatch):
    from rnnkit.config import DataConfig
    from rnnkit.data import corpus_cache
    from rnnkit.errors import DataError
    from rnnkit.files import rnnkit_home

    path = tmp_path / "corpus.txt"
    lines = [f"line {i} of the corpus".encode() for i in range(4000)]
    lines[3500] = b"caf\xe9 au lait"  # Latin-1, in the last range
    path.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setenv("RNNKIT_TOKENIZE_PROCESSES", "2")
    cfg = DataConfig(train=str(path))
    with pytest.raises(DataError, match=r"corpus.txt:3501: not valid UTF-8 \(byte 0xe9"):
        corpus_cache.load(path, cfg)
    cache = rnnkit_home() / "cache" / "corpus"
    assert not corpus_cache.entry("corpus", path, cfg, None).folder.exists()
    assert not list(cache.glob(".*"))
    monkeypatch.setenv("RNNKIT_TOKENIZE_PROCESSES", "0")
    with pytest.raises(DataError, match="RNNKIT_TOKENIZE_PROCESSES='0': give a whole number"):
        corpus_cache.load(path, DataConfig(train=str(path)))


@pytest.mark.parametrize("tokenizer", ["basic", "char"])
def test_cached_classifier_ids_equal_those_of_token_lists(tmp_path, monkeypatch, tokenizer):
    """The classifier's token cache (ids into the file's own tokens) gives the vocabulary and
    ids that token lists give (rnnkit 0.2.0's way), fresh and from the cache."""
    from rnnkit.data import splits
    from rnnkit.data.tokenizers import cut, get_tokenizer
    from rnnkit.data.vocab import Vocab

    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in range(200)] + ["Don't", "好", "吃", "!", " "]
    rows = [(" ".join(rng.choice(words, size=rng.integers(0, 30))), rng.choice(["a", "b", "c"]))
            for _ in range(300)]
    path = _tsv(tmp_path / "train.tsv", rows)
    cfg = DataConfig(train=str(path), tokenizer=tokenizer, min_freq=2, max_vocab=150,
                     max_len=12, truncate="head+tail")
    tokenize = get_tokenizer(tokenizer, cfg.lowercase)
    kept = [(tokenize(t), label) for t, label in rows if tokenize(t)]
    order = np.random.default_rng(5).permutation(len(kept))
    n_valid = int(round(len(kept) * cfg.valid_fraction))
    train = [kept[i] for i in order[n_valid:]]
    valid = [kept[i] for i in order[:n_valid]]
    vocab = Vocab.build([t for t, _ in train], splits.CLASSIFY_SPECIALS, 2, 150)
    for attempt in ("tokenized", "cached"):
        data = load_classification(cfg, 5, ("train", "valid"))
        assert data.vocab.itos == vocab.itos, attempt
        for name, part in (("train", train), ("valid", valid)):
            got = data.splits[name]
            assert [a.tolist() for a in got.ids] == [
                cut(vocab.encode_array(t), 12, "head+tail").tolist() for t, _ in part], attempt
            assert [data.classes[i] for i in got.labels] == [label for _, label in part]
        if attempt == "tokenized":
            monkeypatch.setattr(splits, "read_labeled", lambda *a: pytest.fail("tokenized"))


def test_a_broken_or_foreign_cache_entry_is_rebuilt_never_trusted(tmp_path, tsv_data):
    import shutil

    from rnnkit.config import DataConfig
    from rnnkit.data import corpus_cache

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("the cat sat on the mat\nthe dog ran\n" * 50)
    b.write_text("completely other words here\n" * 40)
    cfg = DataConfig(train=str(a))
    fresh = corpus_cache.tokenize_lines(corpus_cache.raw_lines(a, cfg), cfg, None)

    def same(got):
        return (got.tokens == fresh.tokens and np.array_equal(got.ids, fresh.ids)
                and np.array_equal(got.line_ends, fresh.line_ends))

    folder = corpus_cache.entry("corpus", a, cfg, None).folder
    assert same(corpus_cache.load(a, cfg)) and folder.is_dir()
    # ids truncated (a disk that filled up, a copy cut short)
    ids = folder / "ids.npy"
    ids.write_bytes(ids.read_bytes()[:-40])
    assert same(corpus_cache.load(a, cfg))
    assert corpus_cache.read_entry(corpus_cache.entry("corpus", a, cfg, None)) is not None
    # another file's entry in a's place
    corpus_cache.load(b, cfg)
    shutil.rmtree(folder)
    shutil.copytree(corpus_cache.entry("corpus", b, cfg, None).folder, folder)
    assert same(corpus_cache.load(a, cfg))
    # ids beyond the token list
    np.save(ids, np.full(len(fresh.ids), 10**6, dtype=np.uint32))
    assert same(corpus_cache.load(a, cfg))
    # a classifier's entry whose labels do not match its texts
    tsv = DataConfig(train=str(tsv_data["train"]), text_field="sentence")
    first = load_classification(tsv, 0, ("train", "valid"))
    labeled = corpus_cache.entry("labeled", tsv_data["train"], tsv, None).folder
    meta = json.loads((labeled / "meta.json").read_text())
    meta["labels"] = meta["labels"][:-1]
    (labeled / "meta.json").write_text(json.dumps(meta))
    again = load_classification(tsv, 0, ("train", "valid"))
    assert [x.tolist() for x in again.splits["train"].ids] == [
        x.tolist() for x in first.splits["train"].ids]
    assert len(json.loads((labeled / "meta.json").read_text())["labels"]) == len(meta["labels"]) + 1
