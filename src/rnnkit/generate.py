"""Using a trained language model: generate text from a prompt, score text.

    lm = LanguageModelRunner.load("runs/ptb-small")   # or rnnkit.load("runs/ptb-small")
    lm.generate("the company said", max_tokens=30, seed=1)
    lm.score(["some text"])  # {"perplexity": ..., "loss": ..., "tokens": ...}

The generation settings, their defaults and bounds are `GenerationSettings`'s fields (shared
with `rnnkit generate`'s flags, see `add_generation_flags`, and POST /v1/generate).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rnnkit.config import RunConfig
from rnnkit.data.splits import corpus_tokens, count_words
from rnnkit.errors import UsageError
from rnnkit.language_model import add_word_perplexity, evaluate_stream
from rnnkit.models.lm import LanguageModel
from rnnkit.rundir import RunDir
from rnnkit.runner import build_model
from rnnkit.service_cli import GenerationSettings, add_generation_flags
from rnnkit.data.tokenizers import get_tokenizer, join_tokens
from rnnkit.data.vocab import EOS, Vocab

__all__ = ["GenerationSettings", "LanguageModelRunner", "add_generation_flags", "filter_logits"]
DEFAULTS = GenerationSettings()


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
    task = "lm"

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
        model = build_model(cfg, vocab)
        run.load_weights(model)
        return cls(cfg, vocab, model)

    def encode_prompt(self, prompt: str) -> list[int]:
        tokens = get_tokenizer(self.cfg.data.tokenizer, self.cfg.data.lowercase,
                               subwords=self.vocab.subword_model)(prompt)
        ids = self.vocab.encode(tokens)
        if not ids:
            raise UsageError("the prompt is empty; give at least one word")
        if all(i == self.vocab.unk_id for i in ids) and tokens != ["<unk>"]:
            raise UsageError(f"no word of the prompt {prompt!r} is in the model's vocabulary; "
                             "use words from its training corpus")
        return ids

    def generate(self, prompt: str, max_tokens: int = DEFAULTS.max_tokens,
                 temperature: float = DEFAULTS.temperature, top_k: int = DEFAULTS.top_k,
                 top_p: float = DEFAULTS.top_p, seed: int | None = DEFAULTS.seed,
                 greedy: bool = DEFAULTS.greedy, stop_at_eos: bool = DEFAULTS.stop_at_eos
                 ) -> list[str]:
        """New tokens after the prompt. temperature 0 or greedy=True: always the likeliest.
        Settings outside `GenerationSettings`' bounds raise a UsageError; seed None is 0."""
        return self.sample(prompt, GenerationSettings(
            max_tokens, temperature, top_k, top_p, DEFAULTS.seed if seed is None else seed,
            greedy, stop_at_eos))

    @torch.inference_mode()
    def sample(self, prompt: str, settings: GenerationSettings = DEFAULTS) -> list[str]:
        """New tokens after the prompt, as `settings` say."""
        s = settings
        generator = torch.Generator().manual_seed(s.seed)
        ids = torch.tensor([self.encode_prompt(prompt)])
        logits, state = self.model(ids, None)  # read the prompt: (1, T, V)
        out: list[str] = []
        for _ in range(s.max_tokens):
            last = logits[0, -1]
            if s.greedy or s.temperature == 0:
                token = int(last.argmax())
            else:
                probs = torch.softmax(filter_logits(last / s.temperature, s.top_k, s.top_p), -1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            word = self.vocab.itos[token]
            if s.stop_at_eos and word == EOS:
                break
            out.append(word)
            logits, state = self.model(torch.tensor([[token]]), state)
        return out

    def detokenize(self, tokens: list[str]) -> str:
        lines: list[list[str]] = [[]]
        for token in tokens:
            if token == EOS:
                lines.append([])
            else:
                lines[-1].append(token)
        return "\n".join(join_tokens(line, self.cfg.data.tokenizer) for line in lines)

    def score(self, lines: list[str]) -> dict:
        """Perplexity of text (lines as in a corpus file) under the model."""
        ids = self.vocab.encode(corpus_tokens(lines, self.cfg.data, self.vocab.subword_model))
        if len(ids) < 2:
            raise UsageError("the text to score needs at least two tokens")
        result = evaluate_stream(self.model, torch.tensor(ids))
        result["unknown_tokens"] = sum(1 for i in ids if i == self.vocab.unk_id)
        if self.vocab.subword_model is not None:
            add_word_perplexity(result, count_words(lines, self.cfg.data))
        return result
