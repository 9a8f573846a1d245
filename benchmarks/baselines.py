"""Linear baselines beside rnnkit runs, on exactly the splits rnnkit sees.

    python benchmarks/baselines.py --dataset imdb [--json out.json]
    python benchmarks/baselines.py --train a.tsv [--valid b.tsv] [--test c.tsv] \
        --text-field sentence --label-field label [--seed 1 --valid-fraction 0.1]
    python benchmarks/baselines.py --rnnkit-run runs/imdb-seed [runs/other ...]
    python benchmarks/baselines.py --dataset my-chinese-set --features char

Rows (per unit of `--features`: `word` (default), `char`, or `all`):
- TF-IDF uni+bigrams + logistic regression: sublinear tf, idf and vocabulary from train only,
  n-grams seen in at least `--min-df` (2) training texts; L2 logistic regression (liblinear).
- NB-LR (NBSVM-style, Wang & Manning 2012): binarized uni+bigram counts, each feature scaled by
  its naive-Bayes log-count ratio r = log((p/|p|_1) / (q/|q|_1)), p = alpha + the feature's
  binarized counts in the class's texts, q = alpha + those in the others' (alpha = 1), then L2
  logistic regression in place of the paper's SVM, without its interpolation. Two classes:
  one r and one model. More classes: one-vs-rest, one r and one binary model per class, the
  class with the largest decision value wins.
- fastText (only where `import fasttext` works: `pip install -e ".[bench]"`): bigrams
  (wordNgrams 2), 10 dimensions, 5 epochs, the learning rate from {0.05, 0.1, 0.25, 0.5} on
  validation, as Joulin et al. 2016 ("Bag of Tricks") did for their sentiment tables; one
  thread and the run's seed. Fed the same tokens as the other rows. Without fastText its row
  says so and the others run.
Every setting (C from `--grid`, fastText's rate) is chosen on the validation split, by
accuracy, ties to the smaller value; the test split is scored once, with the chosen setting.
Multi-class TF-IDF rows are one-vs-rest too (liblinear is binary).

Units. `word`: scikit-learn's default tokenization, lowercased (tokens of two or more word
characters, r"(?u)\\b\\w\\w+\\b"): right for English, useless for text without spaces.
`char`: character uni+bigrams of the lowercased text, whitespace runs made one space (the
baseline for Chinese and other unsegmented text); fastText then gets one token per character,
a space written as "▁".

The splits are rnnkit's by construction: the texts that `rnnkit.data.load_classification`
keeps (read by rnnkit's readers, texts without a token under the run's tokenizer dropped),
the validation split carved from train by rnnkit's own `_split_order` (the seeded
permutation and `valid_fraction`) when no valid file is given, then `limit_train`. The
baselines read the whole texts: rnnkit's `max_len` cut does not apply to them. With
`--rnnkit-run`, the data settings and the seed come from the (first) run's config.json;
every other run must share them, and so must any data flag given beside them, or the script
refuses.

Columns: accuracy on valid and test, macro F1 on test (rnnkit.metrics, as rnnkit's reports),
and train seconds: everything but the test pass (vectorizing train and valid, fitting every
setting of the grid, scoring valid; the shared count pass is charged to each row that uses
it). For rnnkit runs: their results.json figures and `train_seconds`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, when imported by tests
from common import machine, write_json  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.config import DataConfig, RunConfig  # noqa: E402
from rnnkit.data import sources  # noqa: E402
from rnnkit.data.readers import read_labeled  # noqa: E402
from rnnkit.data.sources import split_source  # noqa: E402
from rnnkit.data.splits import _split_order, sort_classes, tokenize_labeled  # noqa: E402
from rnnkit.errors import DataError, UsageError  # noqa: E402
from rnnkit.metrics import classification_report  # noqa: E402
from rnnkit.rundir import RunDir  # noqa: E402
from rnnkit.data.tokenizers import get_tokenizer  # noqa: E402

DEFAULT_GRID = (0.5, 1, 2, 4, 8, 16)
FASTTEXT_LRS = (0.05, 0.1, 0.25, 0.5)
METHODS = ("tfidf", "nblr", "fasttext")
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# The data settings that decide which texts land in which split.
SPLIT_FIELDS = ("dataset", "train", "valid", "test", "text_field", "label_field", "tokenizer",
                "lowercase", "valid_fraction", "limit_train")
SPACE = "\u2581"  # a space, as a fastText token of the char unit


# --- the splits ------------------------------------------------------------------------------


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # class indices


@dataclass
class SplitTexts:
    classes: list[str]  # raw label values, in class-index order (rnnkit's order)
    names: list[str]  # what users see
    splits: dict[str, Split] = field(default_factory=dict)


def kept_texts(path: Path, cfg: DataConfig) -> tuple[list[str], list[str]]:
    """The raw texts and labels of a file that rnnkit's `tokenize_labeled` keeps: those with at
    least one token under the configured tokenizer (rnnkit skips the others before anything
    else, the carve included). Checked against `tokenize_labeled`'s own labels."""
    raw = read_labeled(path, cfg.text_field, cfg.label_field, cfg.encoding)
    tokenized = tokenize_labeled(path, cfg)  # rnnkit's answer (its token cache, where it has it)
    if len(tokenized.labels) == len(raw.texts):
        texts, labels = raw.texts, raw.labels
    else:
        tokenizer = get_tokenizer(cfg.tokenizer, cfg.lowercase)
        keep = [i for i, text in enumerate(raw.texts) if tokenizer(text)]
        texts, labels = [raw.texts[i] for i in keep], [raw.labels[i] for i in keep]
    if labels != tokenized.labels:
        raise DataError(f"{path}: the texts read here do not line up with rnnkit's tokenized "
                        "texts; the split would not be rnnkit's")
    return texts, labels


def load_split_texts(cfg: DataConfig, seed: int, want: tuple[str, ...] = ("train", "valid",
                     "test")) -> SplitTexts:
    """Raw texts and labels of rnnkit's splits for this data config and seed: the same texts,
    in the same order, as `rnnkit.data.load_classification(cfg, seed)` numericalizes.

    rnnkit exposes no raw-text splits, so this calls its pieces: `kept_texts` for each file,
    then `rnnkit.data.splits._split_order` (the seeded permutation, the first
    round(n * valid_fraction) texts as valid when no valid file is given, then limit_train)
    on the raw texts in place of token lists."""
    train_path = split_source(cfg, "train")
    texts, labels = kept_texts(train_path, cfg)
    carve = split_source(cfg, "valid") is None
    valid_idx, train_idx = _split_order(len(texts), cfg, seed, carve, train_path)
    raw = {"train": ([texts[i] for i in train_idx], [labels[i] for i in train_idx])}
    if valid_idx is not None:
        raw["valid"] = ([texts[i] for i in valid_idx], [labels[i] for i in valid_idx])
    for split in ("valid", "test"):
        path = split_source(cfg, split)
        if split in want and split not in raw and path is not None:
            raw[split] = kept_texts(path, cfg)
    classes = sort_classes(set(raw["train"][1]))
    if len(classes) < 2:
        raise DataError(f"{train_path}: found only one label ({classes[0]!r})")
    index = {c: i for i, c in enumerate(classes)}
    names = cfg.dataset and sources.get_dataset(cfg.dataset).label_names or {}
    out = SplitTexts(classes, [names.get(c, c) for c in classes])
    for split in want:
        if split not in raw:
            continue
        texts, labels = raw[split]
        unknown = sorted(set(labels) - index.keys())
        if unknown:
            raise DataError(f"label {unknown[0]!r} ({split} split) was not seen in training; "
                            f"known labels: {', '.join(classes)}")
        out.splits[split] = Split(list(texts), np.asarray([index[y] for y in labels],
                                                          dtype=np.int64))
    return out


# --- features and models ---------------------------------------------------------------------


def count_vectorizer(unit: str, min_df: int) -> CountVectorizer:
    if unit == "word":
        return CountVectorizer(lowercase=True, ngram_range=(1, 2), min_df=min_df,
                               dtype=np.float64)
    return CountVectorizer(lowercase=True, analyzer="char", ngram_range=(1, 2), min_df=min_df,
                           dtype=np.float64)


def nb_ratios(binary: sp.spmatrix, positive: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Wang & Manning's log-count ratio per feature: r = log((p/|p|_1) / (q/|q|_1)) with
    p = alpha + the binarized counts summed over the positive texts, q = the same over the
    others."""
    positive = np.asarray(positive, dtype=bool)
    p = alpha + np.asarray(binary[positive].sum(0)).ravel()
    q = alpha + np.asarray(binary[~positive].sum(0)).ravel()
    return np.log((p / p.sum()) / (q / q.sum()))


def binarize(counts: sp.csr_matrix) -> sp.csr_matrix:
    """1 where a text has the feature at all (the counts' stored entries are all non-zero)."""
    out = counts.copy()
    out.data[:] = 1.0
    return out


def _logistic(c: float, seed: int) -> LogisticRegression:
    # The dual problem suits many more features than texts; L2 is the default penalty.
    return LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=1000,
                              random_state=seed)


class OneVsRest:
    """Binary logistic regression per class on its own view of the features (NB-LR scales
    them per class); two classes make one model. Predicts the largest decision value."""

    def __init__(self, c: float, seed: int, num_classes: int, views=None):
        self.c, self.seed, self.num_classes = c, seed, num_classes
        self.views = views  # per model: features -> its features (None: as they are)
        self.converged = True

    def _targets(self) -> list[int]:
        return [1] if self.num_classes == 2 else list(range(self.num_classes))

    def _view(self, k: int, x):
        return x if self.views is None else self.views[k](x)

    def fit(self, x, y: np.ndarray) -> "OneVsRest":
        self.models = []
        for k, target in enumerate(self._targets()):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model = _logistic(self.c, self.seed).fit(self._view(k, x), y == target)
            self.converged &= not any(issubclass(w.category, ConvergenceWarning)
                                      for w in caught)
            self.models.append(model)
        return self

    def predict(self, x) -> np.ndarray:
        scores = np.column_stack([m.decision_function(self._view(k, x))
                                  for k, m in enumerate(self.models)])
        if self.num_classes == 2:
            return (scores[:, 0] > 0).astype(np.int64)
        return scores.argmax(1)


def accuracy(gold: np.ndarray, pred: np.ndarray) -> float:
    return float((gold == pred).mean()) if len(gold) else float("nan")


def choose(grid: dict[Any, float]) -> Any:
    """The setting with the best validation accuracy; ties to the smaller setting."""
    best = max(grid.values())
    return min(k for k, v in grid.items() if v == best)


@dataclass
class Row:
    name: str
    kind: str = "baseline"  # baseline | rnnkit | skipped
    valid_accuracy: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    train_seconds: float | None = None
    setting: str = ""
    grid: dict[str, float] = field(default_factory=dict)  # setting -> valid accuracy
    note: str = ""
    test_report: dict | None = None


def _test_figures(row: Row, data: SplitTexts, pred: np.ndarray | None) -> None:
    if pred is None:
        return
    report = classification_report(data.splits["test"].labels, pred, data.names)
    row.test_accuracy, row.test_macro_f1 = report["accuracy"], report["macro_f1"]
    row.test_report = report


def linear_rows(data: SplitTexts, unit: str, methods: tuple[str, ...], grid: tuple[float, ...],
                min_df: int, seed: int, log=print) -> list[Row]:
    """The TF-IDF + LR and NB-LR rows of one unit, sharing one count pass over the texts."""
    train, valid = data.splits["train"], data.splits["valid"]
    test = data.splits.get("test")
    start = time.perf_counter()
    vectorizer = count_vectorizer(unit, min_df)
    counts = {"train": vectorizer.fit_transform(train.texts).tocsr(),
              "valid": vectorizer.transform(valid.texts).tocsr()}
    shared = time.perf_counter() - start
    features = len(vectorizer.vocabulary_)
    log(f"{unit} uni+bigram counts: {features:,} features (min_df {min_df}), {shared:.1f} s")
    k = len(data.classes)
    rows = []
    for method in methods:
        if method not in ("tfidf", "nblr"):
            continue
        start = time.perf_counter()
        if method == "tfidf":
            transform = TfidfTransformer(sublinear_tf=True).fit(counts["train"]).transform
            views = None
        else:
            transform = binarize
            xb = transform(counts["train"])
            targets = [1] if k == 2 else range(k)
            ratios = [nb_ratios(xb, train.labels == t) for t in targets]
            views = [lambda x, r=r: sp.csr_matrix(x.multiply(r)) for r in ratios]
        x = {"train": transform(counts["train"]), "valid": transform(counts["valid"])}
        scores, models = {}, {}
        for c in grid:
            model = OneVsRest(c, seed, k, views).fit(x["train"], train.labels)
            scores[c] = accuracy(valid.labels, model.predict(x["valid"]))
            models[c] = model
            log(f"  {method} {unit} C={c:g}: valid accuracy {scores[c]:.4f}"
                + ("" if model.converged else " (not converged)"))
        chosen = choose(scores)
        seconds = shared + time.perf_counter() - start
        name = (f"TF-IDF {unit} 1-2gram + LR" if method == "tfidf"
                else f"NB-LR {unit} 1-2gram (NBSVM-style)")
        row = Row(name, valid_accuracy=scores[chosen],
                  train_seconds=seconds, setting=f"C={chosen:g}",
                  grid={f"C={c:g}": s for c, s in scores.items()},
                  note=f"{features:,} features" + (
                      "" if models[chosen].converged else "; did not converge"))
        if test is not None:
            x_test = transform(vectorizer.transform(test.texts).tocsr())
            _test_figures(row, data, models[chosen].predict(x_test))
        rows.append(row)
    return rows


def fasttext_tokens(texts: list[str], unit: str) -> list[str]:
    """One line per text, the tokens the linear rows see, space-separated."""
    if unit == "word":
        tokenize = CountVectorizer(lowercase=True).build_tokenizer()
        return [" ".join(tokenize(text.lower())) for text in texts]
    spaces = re.compile(r"\s+")
    return [" ".join(spaces.sub(" ", text.lower()).strip().replace(" ", SPACE))
            for text in texts]


def fasttext_row(data: SplitTexts, unit: str, seed: int, threads: int, log=print) -> Row:
    name = f"fastText {unit} bigrams"
    if importlib.util.find_spec("fasttext") is None:
        return Row(name, kind="skipped",
                   note='fastText is not installed (pip install -e ".[bench]")')
    import fasttext

    train, valid = data.splits["train"], data.splits["valid"]
    test = data.splits.get("test")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        lines = fasttext_tokens(train.texts, unit)
        path.write_text("".join(f"__label__{y} {t}\n" for y, t in zip(train.labels, lines)),
                        encoding="utf-8")
        valid_lines = fasttext_tokens(valid.texts, unit)
        scores, models = {}, {}
        for lr in FASTTEXT_LRS:
            model = fasttext.train_supervised(str(path), lr=lr, dim=10, epoch=5, wordNgrams=2,
                                              minCount=1, thread=threads, seed=seed, verbose=0)
            scores[lr] = accuracy(valid.labels, _fasttext_predict(model, valid_lines))
            models[lr] = model
            log(f"  fastText {unit} lr={lr:g}: valid accuracy {scores[lr]:.4f}")
    chosen = choose(scores)
    row = Row(name, valid_accuracy=scores[chosen], train_seconds=time.perf_counter() - start,
              setting=f"lr={chosen:g}", grid={f"lr={lr:g}": s for lr, s in scores.items()},
              note=f"dim 10, 5 epochs, {threads} thread(s)")
    if test is not None:
        _test_figures(row, data, _fasttext_predict(models[chosen],
                                                   fasttext_tokens(test.texts, unit)))
    return row


def _fasttext_predict(model, lines: list[str]) -> np.ndarray:
    labels, _ = model.predict(lines, k=1)
    return np.asarray([int(lab[0].removeprefix("__label__")) for lab in labels], dtype=np.int64)


# --- rnnkit runs -----------------------------------------------------------------------------


def split_settings(cfg: DataConfig, seed: int) -> dict[str, Any]:
    """What decides the splits, paths resolved so that equal files compare equal."""
    out = {name: getattr(cfg, name) for name in SPLIT_FIELDS}
    for name in ("train", "valid", "test"):
        if out[name]:
            out[name] = str(Path(out[name]).resolve())
    out["seed"] = seed
    return out


def run_config(path: str) -> RunConfig:
    run = RunDir(path)
    if not run.config_path.is_file():
        raise SystemExit(f"--rnnkit-run {path}: no config.json there; not an rnnkit run")
    cfg = run.config()
    if cfg.model.task != "classify":
        raise SystemExit(f"--rnnkit-run {path}: a {cfg.model.task!r} run; baselines are for "
                         "classifiers")
    return cfg


def rnnkit_row(path: str) -> Row:
    run = RunDir(path)
    cfg = run.config()
    m = cfg.model
    setting = (f"{cfg.preset or 'custom'}: {m.cell} {m.hidden_size}x{m.num_layers}"
               f"{' bi' if m.bidirectional else ''}, {m.pooling} pooling, "
               f"{cfg.train.epochs} epochs, max_len {cfg.data.max_len}")
    if not run.results_path.is_file():
        return Row(f"rnnkit {Path(path).name}", kind="rnnkit", setting=setting,
                   note="no results.json (unfinished run?)")
    results = json.loads(run.results_path.read_text())
    valid, test = results.get("valid") or {}, results.get("test") or {}
    return Row(f"rnnkit {Path(path).name}", kind="rnnkit",
               valid_accuracy=valid.get("accuracy"), test_accuracy=test.get("accuracy"),
               test_macro_f1=test.get("macro_f1"), train_seconds=results.get("train_seconds"),
               setting=setting, note="" if results.get("finished", True) else "stopped early")


# --- the command -----------------------------------------------------------------------------


def cpu_flags() -> dict[str, bool]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return {flag: flag in have for flag in FLAGS}
    except OSError:
        pass
    return {}


def header() -> dict:
    out = machine()
    out["flags"] = cpu_flags()
    out["sklearn"] = sklearn.__version__
    out["rnnkit"] = rnnkit.__version__
    if importlib.util.find_spec("fasttext") is not None:
        from importlib import metadata
        for dist in ("fasttext-numpy2-wheel", "fasttext-wheel", "fasttext"):
            try:
                out["fasttext"] = f"{dist} {metadata.version(dist)}"
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print("| method | valid acc | test acc | test macro F1 | train s | setting | note |")
    print("|---|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r.name} | {_fmt(r.valid_accuracy, '.4f')} | {_fmt(r.test_accuracy, '.4f')} "
              f"| {_fmt(r.test_macro_f1, '.4f')} | {_fmt(r.train_seconds, ',.1f')} | "
              f"{r.setting} | {r.note} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = p.add_argument_group("data (rnnkit's flags; defaults as rnnkit's)")
    data.add_argument("--dataset")
    data.add_argument("--train")
    data.add_argument("--valid")
    data.add_argument("--test")
    data.add_argument("--text-field")
    data.add_argument("--label-field")
    data.add_argument("--tokenizer", help="rnnkit's tokenizer: texts with no token under it are "
                      "dropped before the split, as rnnkit does (default basic)")
    data.add_argument("--seed", type=int, help="rnnkit's --seed (default 1)")
    data.add_argument("--valid-fraction", type=float, help="default 0.1")
    data.add_argument("--limit-train", type=int, help="default 0: all")
    p.add_argument("--rnnkit-run", nargs="+", default=[], metavar="RUN_DIR",
                   help="rnnkit runs to show beside the baselines; the data settings come from "
                        "the first one's config.json")
    p.add_argument("--features", choices=("word", "char", "all"), default="word")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--grid", default=",".join(f"{c:g}" for c in DEFAULT_GRID),
                   help="values of C for the logistic regressions")
    p.add_argument("--min-df", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="fastText's threads")
    p.add_argument("--json")
    args = p.parse_args(argv)
    args.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = sorted(set(args.methods) - set(METHODS))
    if bad or not args.methods:
        p.error(f"--methods: unknown {', '.join(bad) or '(none)'}; choose from "
                f"{', '.join(METHODS)}")
    try:
        args.grid = tuple(float(c) for c in args.grid.split(","))
    except ValueError:
        p.error(f"--grid must be comma-separated numbers, got {args.grid!r}")
    if any(c <= 0 for c in args.grid):
        p.error("--grid values must be positive")
    args.parser = p
    return args


FLAG_TO_FIELD = {"dataset": "dataset", "train": "train", "valid": "valid", "test": "test",
                 "text_field": "text_field", "label_field": "label_field",
                 "tokenizer": "tokenizer", "valid_fraction": "valid_fraction",
                 "limit_train": "limit_train"}


def data_settings(args: argparse.Namespace) -> tuple[DataConfig, int]:
    """The data config and seed: from the first rnnkit run when there is one (any data flag
    given as well must agree with it), else from the flags with rnnkit's defaults."""
    given = {f: getattr(args, f) for f in FLAG_TO_FIELD if getattr(args, f) is not None}
    if not args.rnnkit_run:
        if "dataset" not in given and "train" not in given:
            args.parser.error("give --dataset NAME, --train FILE or --rnnkit-run RUN_DIR")
        return DataConfig(**given), 1 if args.seed is None else args.seed
    configs = [run_config(path) for path in args.rnnkit_run]
    first = configs[0]
    cfg, seed = first.data, first.train.seed
    reference = split_settings(cfg, seed)
    for path, other in zip(args.rnnkit_run[1:], configs[1:]):
        differ = _differences(reference, split_settings(other.data, other.train.seed))
        if differ:
            raise SystemExit(f"--rnnkit-run {path} was trained on other splits than "
                             f"{args.rnnkit_run[0]} ({differ}); compare runs of one data "
                             "description at a time")
    if given or args.seed is not None:
        wanted = split_settings(dataclasses.replace(cfg, **given),
                                seed if args.seed is None else args.seed)
        differ = _differences(reference, wanted)
        if differ:
            raise SystemExit(f"the data flags differ from {args.rnnkit_run[0]}'s config.json "
                             f"({differ}): the baselines would not see the run's splits; "
                             "drop the flags (the run's settings are used) or pick a run "
                             "trained on that data")
    return cfg, seed


def _differences(a: dict, b: dict) -> str:
    return "; ".join(f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg, seed = data_settings(args)
    facts = header()
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in facts["flags"].items())
    print(f"machine: {facts['cpu']} ({facts['cores']} cores; {flags}); torch {facts['torch']}, "
          f"scikit-learn {facts['sklearn']}, rnnkit {facts['rnnkit']}, "
          f"fastText {facts.get('fasttext', 'not installed')}")
    start = time.perf_counter()
    data = load_split_texts(cfg, seed)
    sizes = {s: len(part.texts) for s, part in data.splits.items()}
    source = cfg.dataset or cfg.train
    print(f"data: {source}; seed {seed}, valid_fraction {cfg.valid_fraction:g}, limit_train "
          f"{cfg.limit_train}; {', '.join(f'{s} {n:,}' for s, n in sizes.items())} "
          f"({time.perf_counter() - start:.1f} s to read)")
    units = ("word", "char") if args.features == "all" else (args.features,)
    rows: list[Row] = []
    for unit in units:
        rows += linear_rows(data, unit, args.methods, args.grid, args.min_df, seed)
        if "fasttext" in args.methods:
            rows.append(fasttext_row(data, unit, seed, args.threads))
    rows += [rnnkit_row(path) for path in args.rnnkit_run]
    print_rows(f"Baselines on {source} ({', '.join(f'{s} {n:,}' for s, n in sizes.items())}); "
               "settings chosen on valid", rows)
    payload = {"machine": facts, "data": {**split_settings(cfg, seed), "sizes": sizes,
                                          "labels": data.names},
               "features": args.features, "grid": list(args.grid), "min_df": args.min_df,
               "rows": [dataclasses.asdict(r) for r in rows]}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    try:
        main()
    except UsageError as exc:  # rnnkit's own errors, one line, as the rnnkit command does
        raise SystemExit(f"baselines.py: {exc}") from None
