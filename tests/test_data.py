"""Dataset resolution (cache, mirror, download), embeddings, data stats."""

import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import sources
from rnnkit.data.embeddings import clitic_parts, embedding_matrix, read_vectors
from rnnkit.errors import DataError, UsageError
from rnnkit.data.stats import length_stats
from rnnkit.data.vocab import PAD, UNK, Vocab
from rnnkit.config import DataConfig
from conftest import write_jsonl


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _register(monkeypatch, url, md5):
    ds = sources.Dataset("toy", "corpus", files={"train": "toy/train.txt"},
                          sources={"train": sources.Download(url, md5=md5)})
    monkeypatch.setitem(sources.DATASETS, "toy", ds)


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RNNKIT_MIRROR", str(tmp_path / "mirror"))
    _register(monkeypatch, "http://127.0.0.1:9/none", None)
    (tmp_path / "mirror" / "toy").mkdir(parents=True)
    (tmp_path / "mirror" / "toy" / "train.txt").write_text("mirror")
    assert sources.resolve("toy", "train").read_text() == "mirror"
    (tmp_path / "home" / "data" / "toy").mkdir(parents=True)
    (tmp_path / "home" / "data" / "toy" / "train.txt").write_text("cache")
    assert sources.resolve("toy", "train").read_text() == "cache"


def test_download_verifies_and_is_atomic(tmp_path, monkeypatch, server):
    root, url = server
    (root / "train.txt").write_text("a b c\n")
    monkeypatch.setenv("RNNKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RNNKIT_MIRROR", raising=False)
    _register(monkeypatch, f"{url}/train.txt", hashlib.md5(b"wrong").hexdigest())
    with pytest.raises(DataError, match="checksum mismatch"):
        sources.resolve("toy", "train")
    leftovers = [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert leftovers == []  # nothing half-written or unverified is kept
    _register(monkeypatch, f"{url}/train.txt", hashlib.md5(b"a b c\n").hexdigest())
    assert sources.resolve("toy", "train").read_text() == "a b c\n"


def test_offline_message_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RNNKIT_MIRROR", raising=False)
    _register(monkeypatch, "http://127.0.0.1:9/train.txt", None)  # port 9: nothing listens
    with pytest.raises(UsageError, match=r"could not download.*place it at .*toy/train.txt"):
        sources.resolve("toy", "train")
    with pytest.raises(UsageError, match="unknown dataset 'nope'"):
        sources.resolve("nope", "train")


def test_mirror_layout_matches_registry(mirror):
    for name, ds in sources.DATASETS.items():
        for split, rel in ds.files.items():
            assert (mirror / rel).is_file(), f"{name} {split}: {rel}"


def _vocab():
    return Vocab.build([["the", "cat", "Dog", "zebra"]], [PAD, UNK])


def test_text_vectors_keep_only_vocab_rows(tmp_path):
    lines = ["3 4", "the 1 2 3 4", "cat 0.5 0.5 0.5 0.5", "dog 9 9 9 9", "other 7 7 7 7"]
    path = tmp_path / "vec.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    rows, dim = read_vectors(path, {"the", "cat"})
    assert dim == 4 and set(rows) == {"the", "cat"}
    matrix, coverage = embedding_matrix(_vocab(), str(path), 4, "mean")
    vocab = _vocab()
    assert matrix.shape == (len(vocab), 4)
    assert matrix[vocab.stoi["Dog"]].tolist() == [9, 9, 9, 9]  # lower-case fallback
    assert matrix[vocab.pad_id].abs().sum() == 0
    mean = np.mean([[1, 2, 3, 4], [0.5] * 4, [9] * 4], axis=0)
    assert np.allclose(matrix[vocab.stoi["zebra"]].numpy(), mean)
    assert coverage.found == 3


def test_contractions_take_the_mean_of_their_parts(tmp_path):
    # Vectors of Penn-Treebank-style text have "do" and "n't", not "don't".
    path = tmp_path / "vec.txt"
    path.write_text("do 1 1\nn't 3 5\nit 2 0\n's 0 2\nca 4 4\nwo 6 6\n")
    vocab = Vocab.build([["don't", "It's", "can't", "won't", "shan't", "n't", "'s"]], [PAD, UNK])
    matrix, coverage = embedding_matrix(vocab, str(path), 2, "mean")
    row = lambda w: matrix[vocab.stoi[w]].tolist()  # noqa: E731
    assert row("don't") == [2, 3] and row("It's") == [1, 1]
    assert row("can't") == [3.5, 4.5] and row("won't") == [4.5, 5.5]
    assert row("n't") == [3, 5]  # a word the vectors have is read, not composed
    # "sha" is missing: the unknown row, the mean of the vocabulary's rows read directly
    # ("n't" and "'s"), not of the composed ones
    assert row("shan't") == [1.5, 3.5]
    assert coverage.composed == 4 and coverage.found == 6
    assert "4 of them from their parts" in str(coverage)
    assert clitic_parts("doesn't") == ("does", "n't") and clitic_parts("80's") == ("80", "'s")
    assert clitic_parts("n't") is None and clitic_parts("o'brien") is None


def test_word2vec_binary(tmp_path):
    path = tmp_path / "v.bin"
    with open(path, "wb") as f:
        f.write(b"2 3\n")
        for word, vec in ((b"the", (1, 2, 3)), (b"cat", (4, 5, 6))):
            f.write(word + b" " + struct.pack("<3f", *vec) + b"\n")
    rows, dim = read_vectors(path, {"cat"})
    assert dim == 3 and rows["cat"].tolist() == [4, 5, 6]


def test_inconsistent_vectors_name_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("the 1 2 3\ncat 1 2\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: 2 values where .* have 3"):
        read_vectors(path, {"the"})
    with pytest.raises(UsageError, match="set --embedding-dim 3"):
        (tmp_path / "ok.txt").write_text("the 1 2 3\n")
        embedding_matrix(_vocab(), str(tmp_path / "ok.txt"), 5)


def test_length_stats(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join('{"text": "%s", "label": 1}\n' % " ".join(["w"] * n)
                            for n in range(1, 101)))
    stats = length_stats(str(path), out=tmp_path / "h.png", coverage=0.9)
    assert stats["texts"] == 100 and stats["max"] == 100
    assert stats["suggested_max_len"] == 100  # 90th percentile 90.1 rounded up to 50s
    assert (tmp_path / "h.png").stat().st_size > 1000


def _clauses(n, seed=0):
    """Chinese-like texts without spaces: random runs of 40 characters."""
    rng = np.random.default_rng(seed)
    chars = [chr(0x4E00 + i) for i in range(40)]
    return ["".join(rng.choice(chars, size=rng.integers(6, 12))) for _ in range(n)]


def test_stats_report_unknown_tokens_and_warn_when_the_tokenizer_does_not_fit(tmp_path):
    path = tmp_path / "zh.jsonl"
    write_jsonl(path, [{"text": t, "label": i % 2} for i, t in enumerate(_clauses(3000))])
    whole = length_stats(str(path), out=tmp_path / "a.png", tokenizer="whitespace")
    # Every text is one "word": nearly all validation tokens are unknown.
    assert whole["unknown_share"] > 0.9 and whole["singleton_share"] > 0.9
    assert any("unknown to the vocabulary" in w for w in whole["warnings"])
    assert any("occur only once" in w and "--tokenizer char" in w for w in whole["warnings"])
    split = length_stats(str(path), out=tmp_path / "b.png")  # basic: per character
    assert split["unknown_share"] == 0.0 and split["vocabulary"] == 41 and not split["warnings"]
    assert split["valid_tokens"] > 0 and "closing 300 texts" in split["valid_source"]


def test_training_warns_about_a_vocabulary_that_does_not_fit(tmp_path):
    from rnnkit.data.splits import load_classification

    path = tmp_path / "zh.jsonl"
    write_jsonl(path, [{"text": t, "label": i % 2} for i, t in enumerate(_clauses(3000))])
    notes = load_classification(DataConfig(train=str(path), tokenizer="whitespace"), 1).notes
    assert any(n.startswith("warning:") and "unknown" in n for n in notes)
    notes = load_classification(DataConfig(train=str(path)), 1).notes
    assert not any(n.startswith("warning:") for n in notes)
