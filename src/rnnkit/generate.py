"""Using a trained language model: generate text from a prompt, score text.

    lm = LanguageModelRunner.load("runs/ptb-small")
    lm.generate("the company said", max_tokens=30, seed=1)
    lm.score(["some text"])  # {"perplexity": ..., "loss": ..., "tokens": ...}
"""

from __future__ import annotations

from pathlib import Path

import torch

from rnnkit.config import RunConfig
from rnnkit.data import corpus_tokens
from rnnkit.errors import UsageError
from rnnkit.language_model import evaluate_stream
from rnnkit.models.lm import LanguageModel
from rnnkit.rundir import RunDir
from rnnkit.tokenize import get_tokenizer
from rnnkit.vocab import EOS, Vocab


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the top-k tokens and/or the smallest set whose probability reaches top_p. (V,)"""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, -1) >= top_p  # keep the first to cross
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    return logits


class LanguageModelRunner:
    def __init__(self, cfg: RunConfig, vocab: Vocab, model: LanguageModel):
        self.cfg = cfg
        self.vocab = vocab
        self.model = model.eval()

    @classmethod
    def load(cls, path: Path | str) -> "LanguageModelRunner":
        run = RunDir(path)
        meta = run.meta()
        if meta["task"] != "lm":
            raise UsageError(f"{path}: is a {meta['task']} run; generate and score need a "
                             "language model (use `rnnkit predict` for classifiers)")
        cfg, vocab = run.config(), run.vocab()
        model = LanguageModel(len(vocab), cfg.model)
        run.load_weights(model)
        return cls(cfg, vocab, model)

    def encode_prompt(self, prompt: str) -> list[int]:
        tokens = get_tokenizer(self.cfg.data.tokenizer, self.cfg.data.lowercase)(prompt)
        ids = self.vocab.encode(tokens)
        if not ids:
            raise UsageError("the prompt is empty; give at least one word")
        if all(i == self.vocab.unk_id for i in ids) and tokens != ["<unk>"]:
            raise UsageError(f"no word of the prompt {prompt!r} is in the model's vocabulary; "
                             "use words from its training corpus")
        return ids

    @torch.inference_mode()
    def generate(self, prompt: str, max_tokens: int = 30, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                 greedy: bool = False, stop_at_eos: bool = False) -> list[str]:
        """New tokens after the prompt. temperature 0 or greedy=True: always the likeliest."""
        if max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, got {max_tokens}")
        if temperature < 0:
            raise UsageError(f"temperature must not be negative, got {temperature}")
        if not 0.0 < top_p <= 1.0 or top_k < 0:
            raise UsageError("top_p must be in (0, 1] and top_k >= 0")
        generator = torch.Generator().manual_seed(seed if seed is not None else 0)
        ids = torch.tensor([self.encode_prompt(prompt)])
        logits, state = self.model(ids, None)  # read the prompt: (1, T, V)
        out: list[str] = []
        for _ in range(max_tokens):
            last = logits[0, -1]
            if greedy or temperature == 0:
                token = int(last.argmax())
            else:
                probs = torch.softmax(filter_logits(last / temperature, top_k, top_p), -1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            word = self.vocab.itos[token]
            if stop_at_eos and word == EOS:
                break
            out.append(word)
            logits, state = self.model(torch.tensor([[token]]), state)
        return out

    def detokenize(self, tokens: list[str]) -> str:
        sep = "" if self.cfg.data.tokenizer == "char" else " "
        return sep.join("\n" if t == EOS else t for t in tokens).replace(" \n ", "\n")

    def score(self, lines: list[str]) -> dict:
        """Perplexity of text (lines as in a corpus file) under the model."""
        ids = self.vocab.encode(corpus_tokens(lines, self.cfg.data))
        if len(ids) < 2:
            raise UsageError("the text to score needs at least two tokens")
        result = evaluate_stream(self.model, torch.tensor(ids))
        result["unknown_tokens"] = sum(1 for i in ids if i == self.vocab.unk_id)
        return result
