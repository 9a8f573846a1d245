"""Language-model training speed: rnnkit against a textbook PyTorch loop, same process,
alternating rounds, medians.

The reference is the pytorch/examples word_language_model recipe written out here: time-major
nn.LSTM, full softmax through nn.Linear + CrossEntropyLoss, manual SGD, clipping. rnnkit runs
its own training step (`LanguageModelTask.train_step`, optimizer, clipping) on the same model
shape and batch, with each of its output layers and precisions.

    python benchmarks/lm_train.py                 # ptb-small shape on PTB (RNNKIT_MIRROR)
    python benchmarks/lm_train.py --hidden 650 --steps 35 --rounds 3 --windows 10
    python benchmarks/lm_train.py --device cuda --hidden 1500 --steps 35 --batch 20  # on a GPU
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from common import alternate, machine, matmul_peak, print_table, synchronize, write_json
from rnnkit.config import preset
from rnnkit.data.splits import load_corpus
from rnnkit.language_model import LanguageModelTask
from rnnkit.errors import UsageError
from rnnkit.precision import bf16_available, resolve_device
from rnnkit.train import clip_gradients, make_optimizer


class TextbookLM(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.rnn = nn.LSTM(hidden, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x, hidden):  # x (T, B)
        out, hidden = self.rnn(self.embedding(x), hidden)
        return self.decoder(out).view(-1, self.decoder.out_features), hidden


def lm_flops_per_token(hidden: int, layers: int, vocab: int) -> float:
    """Training FLOPs per token (forward x3): LSTM gates and the full output layer."""
    return 3 * (layers * 2 * 4 * hidden * (2 * hidden) + 2 * hidden * vocab)


def adaptive_flops_per_token(model, counts: torch.Tensor, hidden: int) -> float:
    """Training FLOPs per token of the adaptive softmax, weighted by real token frequencies."""
    asm = model.adaptive
    cutoffs = asm.cutoffs  # [c0, c1, ..., vocab]
    share = [float(counts[lo:hi].sum() / counts.sum())
             for lo, hi in zip([0] + cutoffs[:-1], cutoffs)]
    head = 2 * hidden * asm.head.out_features
    tails = sum(share[i + 1] * 2 * (hidden * proj[0].out_features
                                    + proj[0].out_features * proj[1].out_features)
                for i, proj in enumerate(asm.tail))
    layers = model.cfg.num_layers
    return 3 * (layers * 2 * 4 * hidden * 2 * hidden + head + tails)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--windows", type=int, default=40, help="BPTT windows per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except UsageError as exc:
        parser.error(str(exc))

    cfg = preset("ptb-small")
    cfg = cfg.override(hidden_size=args.hidden, embedding_dim=args.hidden, num_layers=args.layers,
                       batch_size=args.batch, num_steps=args.steps, dropout=0.0)
    corpus = load_corpus(cfg.data, ("train",))
    vocab = len(corpus.vocab)
    counts = torch.bincount(corpus.splits["train"], minlength=vocab).double()
    torch.manual_seed(0)

    # --- reference: the textbook loop --------------------------------------------------------
    ref = TextbookLM(vocab, args.hidden, args.layers).to(device)
    data = corpus.splits["train"]
    width = len(data) // args.batch
    streams_t = data[: width * args.batch].view(args.batch, width).t().contiguous().to(device)
    criterion = nn.CrossEntropyLoss()
    ref_pos = {"i": 0, "hidden": None}

    def reference() -> int:
        for _ in range(args.windows):
            i = ref_pos["i"]
            if i + args.steps + 1 >= width:
                i = 0
            x, y = streams_t[i: i + args.steps], streams_t[i + 1: i + 1 + args.steps]
            hidden = ref_pos["hidden"]
            if hidden is not None:
                hidden = tuple(h.detach() for h in hidden)
            ref.zero_grad()
            out, hidden = ref(x, hidden)
            loss = criterion(out, y.reshape(-1)) * args.steps
            loss.backward()
            nn.utils.clip_grad_norm_(ref.parameters(), 5.0)
            with torch.no_grad():
                for p in ref.parameters():
                    p.add_(p.grad, alpha=-1.0)
            ref_pos["i"], ref_pos["hidden"] = i + args.steps, hidden
        synchronize(device)
        return args.windows * args.steps * args.batch

    # --- rnnkit: its own training step on the same shape --------------------------------------
    def rnnkit_variant(**overrides):
        vcfg = cfg.override(**overrides)
        task = LanguageModelTask(vcfg, corpus)
        model = task.build_model().to(device).train()
        optimizer = make_optimizer(model, vcfg)
        starts = task.train_batches(0)
        pos = {"k": 0, "state": None}

        def work() -> int:
            for _ in range(args.windows):
                loss, count, state = task.train_step(model, starts[pos["k"] % len(starts)],
                                                     pos["state"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip_gradients(model, vcfg.train.clip)
                optimizer.step()
                pos["k"], pos["state"] = pos["k"] + 1, state
            synchronize(device)
            return args.windows * args.steps * args.batch

        return model, work

    full_model, full = rnnkit_variant()
    adaptive_model, adaptive = rnnkit_variant(softmax="adaptive")
    variants = {
        "reference (textbook, full softmax)": reference,
        "rnnkit full softmax fp32": full,
        "rnnkit adaptive softmax fp32": adaptive,
    }
    if bf16_available(device):
        variants["rnnkit full softmax bf16"] = rnnkit_variant(precision="bf16")[1]
        variants["rnnkit adaptive softmax bf16"] = rnnkit_variant(softmax="adaptive",
                                                                  precision="bf16")[1]
    else:
        print(f"no native bfloat16 on {device}: the bf16 rows are left out")
    peak = matmul_peak(device=device)
    results = alternate(variants, args.rounds)
    dense = lm_flops_per_token(args.hidden, args.layers, vocab)
    sparse = adaptive_flops_per_token(adaptive_model, counts, args.hidden)
    rows = []
    for name, r in results.items():
        flops = sparse if "adaptive" in name else dense
        rows.append({"name": name, **r, "gflops": r["rate"] * flops / 1e9, "peak": peak})
    title = (f"LM training on {device}, {args.layers}x{args.hidden} LSTM, batch {args.batch} x "
             f"{args.steps} steps, vocab {vocab:,}; matmul peak {peak:.0f} GFLOP/s; {machine()}")
    print_table(title, "tokens/s", rows, "reference (textbook, full softmax)")
    # The same full-softmax model cannot beat the reference by more than the share of the
    # matmul peak the reference leaves unused: every FLOP counted above is needed.
    ceiling = peak / rows[0]["gflops"]
    print(f"\nCeiling for the full-softmax model on this machine: matmul peak / reference "
          f"GFLOP/s = {ceiling:.2f}x (every counted FLOP at the peak rate)")
    write_json(args.json, {"machine": machine(), "matmul_peak_gflops": peak, "args": vars(args),
                           "rows": rows, "full_softmax_ceiling": ceiling})


if __name__ == "__main__":
    main()
