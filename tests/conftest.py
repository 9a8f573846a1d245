import json
import os
import random
from pathlib import Path

import pytest

# The test files that take longest start first, so that two workers finish together.
LONG_FIRST = ("tests/test_real.py", "tests/test_distributed.py", "tests/test_train.py",
              "tests/test_readme.py", "tests/test_awd.py", "tests/test_web.py",
              "tests/test_export.py", "tests/test_cli.py", "tests/test_ulmfit.py")


def pytest_configure(config):
    # Each xdist worker uses one core: one torch thread, here and in the processes it starts.
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return LONG_FIRST.index(path) if path in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)

POS = ["great", "wonderful", "loved", "superb", "excellent", "fun", "moving", "brilliant"]
NEG = ["awful", "boring", "hated", "terrible", "dull", "waste", "poor", "bad"]
LM_SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song"]
FILLER = ["the", "movie", "film", "a", "was", "it", "and", "plot", "actors", "story", "this",
          "of", "to", "is", "in", "scene"]


def make_reviews(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Tiny synthetic sentiment data: the label is which sentiment words dominate."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 30))]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label == "pos" else NEG))
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The real-data mirror CI points at; its absence is a failure, never a skip."""
    value = os.environ.get("RNNKIT_MIRROR")
    assert value, "set RNNKIT_MIRROR to the data mirror (e.g. ../shared/data)"
    path = Path(value)
    assert (path / "imdb" / "train.jsonl.gz").is_file(), f"{path} lacks imdb/train.jsonl.gz"
    return path


@pytest.fixture(autouse=True)
def _home(request, tmp_path_factory, monkeypatch):
    # Keep the token cache per test session, away from the user's ~/.cache. Tests of the real
    # corpora share one across xdist workers (whose base folders sit side by side), so that
    # IMDB is tokenized once per run (entries are written atomically).
    if "RNNKIT_HOME" not in os.environ:
        base = tmp_path_factory.getbasetemp()
        if "mirror" in request.fixturenames and "PYTEST_XDIST_WORKER" in os.environ:
            base = base.parent
        monkeypatch.setenv("RNNKIT_HOME", str(base / "home"))


@pytest.fixture
def tsv_data(tmp_path) -> dict[str, Path]:
    rows = make_reviews(600)
    paths = {}
    for split, part in (("train", rows[:400]), ("dev", rows[400:500]), ("test", rows[500:])):
        path = tmp_path / f"{split}.tsv"
        path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part))
        paths[split] = path
    return paths


@pytest.fixture
def corpus_files(tmp_path) -> dict[str, Path]:
    rng = random.Random(0)
    grammar = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "ran", "in", "the", "park"],
               ["the", "bird", "sang", "a", "song"]]
    paths = {}
    for split, n in (("train", 400), ("valid", 60), ("test", 60)):
        lines = [" ".join(rng.choice(grammar)) for _ in range(n)]
        paths[split] = tmp_path / f"corpus.{split}.txt"
        paths[split].write_text("\n".join(lines) + "\n")
    return paths


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny classifier and a tiny language model, trained once for the whole test run and
    shared by the service, web, export and predict tests (which only read them)."""
    from tiny_runs import train_classifier, train_lm

    root = tmp_path_factory.mktemp("tiny-runs")
    return {"clf": train_classifier(root), "lm": train_lm(root)}


@pytest.fixture
def lm_file(tmp_path) -> Path:
    """A 300-line corpus from a 12-word grammar."""
    rng = random.Random(1)
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(rng.choice(LM_SENTENCES) for _ in range(300)) + "\n")
    return path


# The `lm` preset as rnnkit 0.2.0 had it (tied full softmax, plain dropout, plateau decay,
# fp32): what the tests of training mechanics were written against; the flags, for the CLI.
LM_CLASSIC_SETTINGS = dict(precision="fp32", weight_drop=0.0, embedding_dropout=0.0,
                           locked_dropout=False, softmax="full", tie_weights=True,
                           init_range=0.1, schedule="plateau", lr_decay=0.25)
LM_CLASSIC = [part for name, value in {**LM_CLASSIC_SETTINGS, "batch_size": 20,
                                         "num_steps": 35}.items()
              for part in ("--" + name.replace("_", "-"), str(value).lower()
                           if isinstance(value, bool) else str(value))]


def lm_cfg(path, **settings):
    """A tiny `lm`-preset language model on `path` (settings override), in fp32 with plain
    dropout (the mechanics under test do not need the preset's bf16 and AWD regularisers)."""
    from rnnkit.config import preset

    return preset("lm").override(**{**dict(
        train=str(path), embedding_dim=8, hidden_size=8, batch_size=4, num_steps=6, epochs=3,
        dropout=0.3, lr=5.0, **LM_CLASSIC_SETTINGS), **settings})


def write_review_tsvs(root: Path) -> dict[str, Path]:
    """train.tsv (240 synthetic reviews) and dev.tsv (60) with `text` and `label` columns."""
    rows = make_reviews(300, seed=3)
    paths = {}
    for split, part in (("train", rows[:240]), ("dev", rows[240:])):
        paths[split] = root / f"{split}.tsv"
        paths[split].write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part))
    return paths


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
