"""Sentiment training and inference speed on real IMDB reviews (RNNKIT_MIRROR), imdb-seed shape
(frozen 50-d embeddings, one 64-unit LSTM, batch 24, reviews cut at 250 tokens).

The reference is the imdb-seed model trained the textbook way, written out here: every batch
padded to 250, nn.Dropout on the embeddings and on the LSTM's output, nn.LSTM, the output at
the last position, gradient clipping, Adam. A second reference row is the tutorial's lighter
variant (dropout on the output only, no clipping), for comparison with earlier figures. rnnkit
runs its own training step (length-bucketed batches padded to their own maximum, exact masking,
the native LSTM kernel of rnnkit.kernels) on the same reviews, alternating rounds; a further row
runs that step with torch's nn.LSTM in place of the native kernel, to show what the kernel buys.

    python benchmarks/imdb.py [--run runs/imdb-seed]   # with --run, also inference figures
    python benchmarks/imdb.py --run runs/imdb-seed --skip-training
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from common import alternate, machine, matmul_peak, print_table, write_json
from rnnkit import kernels
from rnnkit.classification import ClassificationTask
from rnnkit.config import preset
from rnnkit.data.splits import load_classification
from rnnkit.train import clip_gradients, make_optimizer

MAX_LEN = 250
REFERENCE = "reference (imdb-seed model, textbook, pad to 250)"


class TextbookLSTM(nn.Module):
    def __init__(self, vocab: int, embedding_dropout: bool):
        super().__init__()
        self.embedding = nn.Embedding(vocab, 50)
        self.embedding.weight.requires_grad_(False)
        self.embedding_dropout = nn.Dropout(0.25) if embedding_dropout else nn.Identity()
        self.rnn = nn.LSTM(50, 64, batch_first=True)
        self.dropout = nn.Dropout(0.25)
        self.head = nn.Linear(64, 2)

    def forward(self, ids):  # (B, 250)
        out, _ = self.rnn(self.embedding_dropout(self.embedding(ids)))
        return self.head(self.dropout(out[:, -1]))


def lstm_flops(tokens: int) -> float:
    """Training FLOPs of the LSTM for `tokens` real-or-padded steps (forward x3)."""
    return 3.0 * tokens * 2 * 4 * 64 * (50 + 64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=2400, help="training reviews per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--run", help="a trained imdb-seed run, for inference figures")
    parser.add_argument("--skip-training", action="store_true", help="inference figures only")
    parser.add_argument("--json")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="flush denormal floats to zero for every row (torch.set_flush_denormal)"
                             "; gradients that shrink step by step back through time turn "
                             "denormal, which some CPUs compute far more slowly")
    args = parser.parse_args()
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    if args.skip_training:
        if not args.run:
            parser.error("--skip-training needs --run")
        write_json(args.json, {"machine": machine(), "inference": inference(args.run)})
        return

    cfg = preset("imdb-seed").override(embeddings=None, limit_train=args.reviews)
    data = load_classification(cfg.data, cfg.train.seed, ("train",))
    task = ClassificationTask(cfg, data)
    split = data.splits["train"]
    real_tokens = sum(len(a) for a in split.ids)

    # --- reference: pad everything to 250 ---------------------------------------------------
    padded = np.zeros((len(split.ids), MAX_LEN), dtype=np.int64)
    for row, ids in enumerate(split.ids):
        padded[row, : len(ids)] = ids
    padded_t, labels_t = torch.from_numpy(padded), torch.from_numpy(split.labels)
    loss_fn = nn.CrossEntropyLoss()

    def reference_variant(same_model: bool):
        torch.manual_seed(0)
        ref = TextbookLSTM(len(data.vocab), embedding_dropout=same_model)
        params = [p for p in ref.parameters() if p.requires_grad]
        ref_opt = torch.optim.Adam(params, lr=1e-3)

        def run() -> int:
            ref.train()
            order = torch.randperm(len(padded_t))
            for start in range(0, len(order), 24):
                index = order[start: start + 24]
                ref_opt.zero_grad()
                loss_fn(ref(padded_t[index]), labels_t[index]).backward()
                if same_model:
                    nn.utils.clip_grad_norm_(params, cfg.train.clip)
                ref_opt.step()
            return len(order)
        return run

    def rnnkit_variant(native: bool):
        torch.manual_seed(0)
        model = task.build_model()
        optimizer = make_optimizer(model, cfg)
        epoch = {"n": 0}

        def run() -> int:
            usable = kernels.usable
            if not native:
                kernels.usable = lambda x, hidden: False  # the encoder falls back to nn.LSTM
            try:
                model.train()
                for index in task.train_batches(epoch["n"]):
                    loss, _, _ = task.train_step(model, index, None)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    clip_gradients(model, cfg.train.clip)
                    optimizer.step()
            finally:
                kernels.usable = usable
            epoch["n"] += 1
            return len(split.ids)
        return run

    if not kernels.available():
        print("the native LSTM kernel is not available here (no C compiler?): "
              "the rnnkit rows use nn.LSTM")
    peak = matmul_peak()
    results = alternate({REFERENCE: reference_variant(True),
                         "tutorial variant (output dropout only, pad to 250)":
                             reference_variant(False),
                         "rnnkit (bucketed, masked, native LSTM kernel)": rnnkit_variant(True),
                         "rnnkit with nn.LSTM (bucketed, masked)": rnnkit_variant(False)},
                        args.rounds)
    rows = []
    for name, r in results.items():
        tokens = real_tokens if name.startswith("rnnkit") else len(split.ids) * MAX_LEN
        seconds_per_sample = 1.0 / r["rate"]
        rows.append({"name": name, **r, "peak": peak,
                     "gflops": lstm_flops(tokens) / len(split.ids) / seconds_per_sample / 1e9})
    print_table(f"IMDB training, imdb-seed shape, {len(split.ids):,} real reviews per round; "
                f"LSTM GFLOP/s counted on the steps each computes; {machine()}", "samples/s",
                rows, REFERENCE)
    payload = {"machine": machine(), "matmul_peak_gflops": peak, "training": rows,
               "native_kernel": kernels.available()}

    if args.run:
        payload["inference"] = inference(args.run)
    write_json(args.json, payload)


def inference(run: str) -> dict:
    """Batch prediction from raw text: the textbook way (one regular expression over each
    review, a dict lookup per token, every batch padded to 250 in input order) against
    rnnkit's `Predictor.probabilities`, serial and pipelined; then single-review latency."""
    import re

    from rnnkit.data.sources import split_source
    from rnnkit.predict import Predictor
    from rnnkit.data.readers import read_labeled

    predictor = Predictor.load(run)
    data = predictor.cfg.data
    texts = read_labeled(split_source(data, "test")).texts
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), 5000, replace=False)]

    word = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
    line_break = re.compile(r"<br\s*/?>", re.IGNORECASE)
    model = predictor.model
    stoi, unk, pad = predictor.vocab.stoi, predictor.vocab.unk_id, predictor.vocab.pad_id

    @torch.no_grad()
    def reference_probabilities() -> np.ndarray:
        rows, probs = [], []
        for text in sample:
            tokens = word.findall(line_break.sub(" ", text.lower()))[-data.max_len:]
            rows.append([stoi.get(t, unk) for t in tokens] or [unk])
        for start in range(0, len(rows), 256):
            chunk = rows[start: start + 256]
            ids = torch.full((len(chunk), data.max_len), pad, dtype=torch.long)
            for i, row in enumerate(chunk):
                ids[i, : len(row)] = torch.tensor(row)
            lengths = torch.tensor([len(row) for row in chunk])
            out, _ = model.encoder.rnn(model.encoder.embedding(ids))
            last = out[torch.arange(len(chunk)), lengths - 1]
            probs.append(torch.softmax(model.head(last), -1))
        return torch.cat(probs).numpy()

    def reference() -> int:
        return len(reference_probabilities())

    class Serial(Predictor):
        PIPELINE_MIN_TEXTS = 1 << 62

    serial = Serial(predictor.cfg, predictor.vocab, predictor.names, model)
    if model.cfg.pooling != "last" or model.cfg.bidirectional or model.ngrams is not None:
        raise SystemExit("the inference reference is written for imdb-seed-shaped runs")
    gap = np.abs(reference_probabilities() - predictor.probabilities(sample)).max()
    assert gap < 1e-4, f"the reference computes another function (max difference {gap})"
    results = alternate({
        "reference (regex tokenizer, pad to 250)": reference,
        "rnnkit, tokenize all then model": lambda: len(serial.probabilities(sample)),
        "rnnkit Predictor.probabilities (pipelined)": lambda: len(predictor.probabilities(
            sample))}, rounds=3)
    rows = [{"name": name, **r} for name, r in results.items()]
    print_table("IMDB batch prediction, imdb-seed run, 5,000 real test reviews from raw text",
                "reviews/s", rows, "reference (regex tokenizer, pad to 250)")

    latencies = []
    for text in sample[:300]:
        start = time.perf_counter()
        predictor.predict([text])
        latencies.append((time.perf_counter() - start) * 1000)
    out = {"batch": rows,
           "batch_reviews_per_s": results["rnnkit Predictor.probabilities (pipelined)"]["rate"],
           "single_p50_ms": float(np.percentile(latencies, 50)),
           "single_p99_ms": float(np.percentile(latencies, 99))}
    print("\n| single review predict | ms |\n|---|---:|")
    print(f"| p50 | {out['single_p50_ms']:.2f} |")
    print(f"| p99 | {out['single_p99_ms']:.2f} |")
    return out


if __name__ == "__main__":
    main()
