"""Where a subword language model loses to a word-level one, word by word.

    python benchmarks/subword_gap.py runs/exp/ptb-word2 runs/exp/ptb-sp3 [--split test]

Both runs score the same text (the split of their data) as one stream with the state
carried, as `rnnkit evaluate` does. The subword run's pieces are grouped back into words (a
piece that starts with the SentencePiece space mark, or a special token, starts a word), each
word's loss is the sum over its pieces, and the words are lined up with the word-level run's
tokens. The table splits the difference in mean loss per word by how many pieces a word
took, and shows some frequent words; the last column is each group's share of the whole
difference (in nats per word; exp of the total is the ratio of the per-word perplexities).
"""
import argparse

import numpy as np
import torch

from rnnkit.api import build_task
from rnnkit.data.vocab import EOS, UNK
from rnnkit.rundir import RunDir

SPACE = "\u2581"


def token_losses(path: str, split: str) -> tuple[list[str], np.ndarray]:
    """The split's tokens and the loss of each token after the first."""
    run = RunDir(path)
    task = build_task(run.config(), (split,), run, lambda *a, **k: None)
    model = task.build_model()
    run.load_weights(model)
    model.eval()
    ids = task.data.splits[split]
    inputs, targets = ids[:-1].unsqueeze(0), ids[1:].unsqueeze(0)
    state, parts = model.initial_state(1), []
    with torch.inference_mode():
        for start in range(0, inputs.shape[1], 200):
            features, state = model.features(inputs[:, start: start + 200], state)
            flat = features.reshape(-1, features.shape[-1])
            window = targets[:, start: start + 200].reshape(-1)
            if model.adaptive is None:
                parts.append(torch.nn.functional.cross_entropy(
                    model.decoder(flat).float(), window, reduction="none"))
            else:
                parts.append(-model.adaptive(flat, window).output.float())
    return task.data.vocab.decode(ids.tolist()), torch.cat(parts).numpy()


def words_of(pieces: list[str], losses: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pieces grouped into words: each word's text, summed loss (the first token's is 0: it is
    not predicted) and number of pieces."""
    special = (EOS, UNK)
    texts, sums, counts = [], [], []
    for i, piece in enumerate(pieces):
        loss = float(losses[i - 1]) if i else 0.0
        if not texts or piece.startswith(SPACE) or piece in special or pieces[i - 1] in special:
            texts.append(piece.lstrip(SPACE))
            sums.append(loss)
            counts.append(1)
        else:
            texts[-1] += piece
            sums[-1] += loss
            counts[-1] += 1
    return texts, np.array(sums), np.array(counts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("word_run")
    p.add_argument("subword_run")
    p.add_argument("--split", default="test")
    args = p.parse_args()
    words, word_losses = token_losses(args.word_run, args.split)
    pieces, piece_losses = token_losses(args.subword_run, args.split)
    texts, sums, counts = words_of(pieces, piece_losses)
    if len(texts) != len(words):
        raise SystemExit(f"the runs' texts differ: {len(words):,} words against "
                         f"{len(texts):,} grouped from pieces")
    # word i > 0 is predicted by both: loss word_losses[i - 1] and sums[i]
    a, b, n = word_losses, sums[1:], counts[1:]
    total = float((b - a).mean())
    print(f"{args.split}: {len(words):,} words, {len(pieces):,} pieces "
          f"({len(pieces) / len(words):.3f} a word)")
    print(f"perplexity per word: words {np.exp(a.mean()):.2f}, subwords {np.exp(b.mean()):.2f} "
          f"(difference {total:.4f} nats a word)\n")
    print("| words | share of words | words' loss | subwords' loss | share of the difference |")
    print("|---|---:|---:|---:|---:|")
    groups = [("one piece", n == 1), ("two pieces", n == 2), ("three or more", n >= 3)]
    named = np.array(words[1:])
    groups += [(f"`{w}`", named == w) for w in (EOS, UNK, "the", "N")]
    for name, mask in groups:
        if mask.any():
            share = float((b[mask] - a[mask]).sum() / len(a)) / total if total else 0.0
            print(f"| {name} | {mask.mean():.3f} | {a[mask].mean():.3f} | {b[mask].mean():.3f} "
                  f"| {share:.0%} |")


if __name__ == "__main__":
    main()
