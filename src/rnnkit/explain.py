"""Which words pushed a classifier's decision: occlusion attribution.

For a text with tokens t_1 .. t_n (the run's own tokenizer) and predicted class c,

    contribution(t_i) = p(c | text) - p(c | text without t_i)

A positive value means the word pushed towards the predicted class (removing it lowers the
probability); a negative value means it pushed away. All n occluded variants and the text
itself are scored in one batched call of `Predictor.probabilities`, so explaining a text of n
tokens costs one forward pass over n + 1 texts of about n tokens.

Texts are rebuilt from their tokens by `tokenize.join_tokens` (spaces between words, none
between characters of scripts written without spaces); every tokenizer in rnnkit reads such
a join back as the same tokens, so the only difference
between the reference and a variant is the missing token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rnnkit.predict import Prediction, Predictor
from rnnkit.data.tokenizers.sentencepiece import MARK
from rnnkit.data.tokenizers import get_tokenizer, join_tokens

MAX_EXPLAIN_TOKENS = 400  # tokens past this get no contribution (cost grows as n squared)


@dataclass
class Explanation:
    prediction: Prediction
    tokens: list[str]
    spans: list[tuple[int, int] | None]  # each token's [start, end) in the original text
    contributions: list[float | None]  # None: past max_tokens, not measured

    def to_dict(self) -> dict:
        return {**self.prediction.to_dict(), "tokens": [
            {"token": tok, "start": span[0] if span else None, "end": span[1] if span else None,
             "contribution": value}
            for tok, span, value in zip(self.tokens, self.spans, self.contributions)]}


BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def token_spans(text: str, tokens: list[str], lowercase: bool) -> list[tuple[int, int] | None]:
    """Locate each token in the text, left to right; None where a tokenizer rewrote it (or
    for a SentencePiece byte piece). A subword piece is located without its word mark."""
    haystack = text.lower() if lowercase else text
    if len(haystack) != len(text):  # rare letters whose lowercase is longer: offsets would drift
        return [None] * len(tokens)
    spans: list[tuple[int, int] | None] = []
    position = 0
    for token in tokens:
        token = token.lstrip(MARK)
        if not token or BYTE_PIECE.fullmatch(token):
            spans.append(None)
            continue
        start = haystack.find(token, position)
        if start < 0:
            spans.append(None)
            continue
        spans.append((start, start + len(token)))
        position = start + len(token)
    return spans


def occlusion_texts(predictor: Predictor, text: str, max_tokens: int = MAX_EXPLAIN_TOKENS
                    ) -> tuple[list[str], list[str]]:
    """The text's tokens and the texts to score: the whole text, then one per dropped token."""
    data = predictor.cfg.data
    tokens = get_tokenizer(data.tokenizer, data.lowercase,
                           subwords=predictor.vocab.subword_model)(text)
    variants = [join_tokens(tokens, data.tokenizer)]
    for i in range(min(len(tokens), max_tokens)):
        variants.append(join_tokens(tokens[:i] + tokens[i + 1:], data.tokenizer))
    return tokens, variants


def explain(predictor: Predictor, texts: list[str], max_tokens: int = MAX_EXPLAIN_TOKENS
            ) -> list[Explanation]:
    """Prediction and per-token occlusion contributions for each text (one batched call)."""
    prepared = [occlusion_texts(predictor, text, max_tokens) for text in texts]
    everything = [variant for _, variants in prepared for variant in variants]
    probs = predictor.probabilities(everything) if everything else None
    names = predictor.names
    out: list[Explanation] = []
    row = 0
    for text, (tokens, variants) in zip(texts, prepared):
        block = probs[row: row + len(variants)]
        row += len(variants)
        reference = block[0]
        label = int(reference.argmax())
        prediction = Prediction(names[label], float(reference[label]),
                                {name: float(v) for name, v in zip(names, reference)})
        measured = [float(reference[label] - p[label]) for p in block[1:]]
        contributions: list[float | None] = [*measured, *[None] * (len(tokens) - len(measured))]
        out.append(Explanation(prediction, tokens,
                               token_spans(text, tokens, predictor.cfg.data.lowercase),
                               contributions))
    return out
