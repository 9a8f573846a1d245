"""Language-model generation speed at batch 1: rnnkit's `LanguageModelRunner.generate` against
the textbook loop (pytorch/examples generate.py: torch.no_grad, one token at a time, softmax
of logits / temperature, torch.multinomial), alternating rounds, medians.

    python benchmarks/generate.py runs/ptb-small [--tokens 200]
"""

from __future__ import annotations

import argparse

import torch

from common import alternate, machine, print_table, write_json
from rnnkit.generate import LanguageModelRunner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    lm = LanguageModelRunner.load(args.run)
    prompt = "the company said"
    start_ids = torch.tensor([lm.encode_prompt(prompt)])

    def reference() -> int:
        with torch.no_grad():
            logits, state = lm.model(start_ids, None)
            for _ in range(args.tokens):
                weights = torch.softmax(logits[0, -1] / 1.0, -1)
                token = torch.multinomial(weights, 1).view(1, 1)
                logits, state = lm.model(token, state)
        return args.tokens

    def rnnkit() -> int:
        return len(lm.generate(prompt, max_tokens=args.tokens, seed=1))

    results = alternate({"reference (textbook loop)": reference, "rnnkit generate": rnnkit},
                        args.rounds)
    rows = [{"name": name, **r} for name, r in results.items()]
    print_table(f"LM generation, batch 1, {args.tokens} tokens from '{prompt}', run {args.run}; "
                f"{machine()}", "tokens/s", rows, "reference (textbook loop)")
    write_json(args.json, {"machine": machine(), "run": args.run, "rows": rows})


if __name__ == "__main__":
    main()
