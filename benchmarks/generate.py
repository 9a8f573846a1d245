"""Language-model generation speed at batch 1: rnnkit's `LanguageModelRunner.generate` against
the textbook loop (pytorch/examples generate.py: torch.no_grad, one token at a time through
nn.Embedding + nn.LSTM + the output layer, softmax of the scores, torch.multinomial), with the
run's weights copied into the textbook modules, alternating rounds, medians.

    python benchmarks/generate.py runs/ptb-small [--tokens 200]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

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

    model = lm.model
    if model.cfg.bidirectional:
        raise SystemExit("a language model run is unidirectional")
    embedding = nn.Embedding.from_pretrained(model.encoder.embedding.weight.detach().clone())
    rnn = type(model.encoder.rnn)(model.cfg.embedding_dim, model.cfg.hidden_size,
                                  num_layers=model.cfg.num_layers, batch_first=True).eval()
    rnn.load_state_dict(model.encoder.rnn.state_dict())

    def textbook_step(ids, state):
        out, state = rnn(embedding(ids), state)
        flat = out[:, -1]
        if model.adaptive is not None:
            return model.adaptive.log_prob(flat)[0], state
        return model.decoder(flat)[0], state

    def reference() -> int:
        with torch.no_grad():
            scores, state = textbook_step(start_ids, None)
            for _ in range(args.tokens):
                weights = torch.softmax(scores / 1.0, -1)
                token = torch.multinomial(weights, 1).view(1, 1)
                scores, state = textbook_step(token, state)
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
