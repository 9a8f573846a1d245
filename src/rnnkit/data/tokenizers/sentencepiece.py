"""SentencePiece subword vocabularies (`--tokenizer sentencepiece --vocab-size N`).

A unigram (or BPE) model is trained on the training split's texts only, with byte fallback:
a character the model never saw becomes its UTF-8 bytes (`<0xE5>` ...), so no text has an
unknown token. The model travels inside the run's `vocab.json` (base64), so `evaluate`,
`predict`, `serve`, `export` and the web page tokenize exactly as training did. The rnnkit
vocabulary is the special tokens followed by the model's pieces in its own order.

Corpora such as PTB and WikiText mark their own unknown words with the text `<unk>`, which is
rnnkit's unknown token in every tokenizer: it stays one token here too (the word-level model
predicts it as one word), and the model is trained on the text without it. Models made this
way name their internal unknown piece `MODEL_UNK`; those of rnnkit 0.4.0 and before, `<unk>`,
and read the text `<unk>` as pieces, as they were trained to.

Needs the `sentencepiece` package: `pip install 'rnnkit[subword]'`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from typing import Iterable

from rnnkit.data.vocab import UNK  # rnnkit's unknown token, and the text corpora mark it by
from rnnkit.errors import UsageError

MARK = "\u2581"  # SentencePiece's word-boundary mark
MODEL_UNK = "<subword-unk>"  # the model's own unknown piece (never produced: byte fallback)
MAX_TRAINING_TEXTS = 2_000_000  # a random sample of this many texts trains the model


class TooManyPieces(UsageError):
    """The text allows at most `most` pieces."""

    def __init__(self, most: int):
        super().__init__(f"the training text allows at most {most} pieces")
        self.most = most


def _module():
    try:
        import sentencepiece
    except ImportError:
        raise UsageError("--tokenizer sentencepiece needs the sentencepiece package: pip "
                         "install 'rnnkit[subword]'") from None
    return sentencepiece


def check_available() -> None:
    _module()


def train(texts: Iterable[str], vocab_size: int, model_type: str, seed: int = 1) -> bytes:
    """A SentencePiece model of `vocab_size` pieces (its <unk> included) trained on `texts`;
    a size the text cannot fill is a one-line UsageError."""
    spm = _module()
    out = io.BytesIO()
    lines = (" ".join(text.replace(UNK, " ").split()) for text in texts)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=(line for line in lines if line), model_writer=out,
            vocab_size=vocab_size, model_type=model_type, byte_fallback=True,
            unk_id=0, unk_piece=MODEL_UNK, bos_id=-1, eos_id=-1, pad_id=-1,
            character_coverage=0.9995,
            input_sentence_size=MAX_TRAINING_TEXTS, shuffle_input_sentence=True,
            max_sentence_length=1 << 16, num_threads=1,
            minloglevel=2, train_extremely_large_corpus=False)
    except RuntimeError as exc:
        message = str(exc)
        most = re.search(r"value <= (\d+)", message)
        if most:
            raise TooManyPieces(int(most.group(1))) from None
        if "vocab_size" in message or "Vocabulary size" in message:
            raise UsageError(f"--vocab-size {vocab_size}: {message.splitlines()[-1]}") from None
        raise UsageError(f"SentencePiece could not be trained on this text "
                         f"({message.splitlines()[-1]})") from None
    return out.getvalue()


@functools.lru_cache(maxsize=8)
def _processor(digest: str, model: bytes):
    spm = _module()
    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(model)
    return processor


def processor(model: bytes):
    """A loaded model (cached by content)."""
    return _processor(hashlib.sha256(model).hexdigest(), model)


def pieces(model: bytes) -> list[str]:
    """The model's pieces in id order; id 0 is its unknown piece."""
    p = processor(model)
    return [p.IdToPiece(i) for i in range(p.GetPieceSize())]


def keeps_unk(model: bytes) -> bool:
    """Whether the model reads the text <unk> as rnnkit's unknown token (see above)."""
    return processor(model).IdToPiece(0) == MODEL_UNK


def tokenizer(model: bytes):
    """text -> pieces (and <unk> where the text says it, for models that keep it)."""
    encode = processor(model).EncodeAsPieces
    if not keeps_unk(model):
        return encode

    def tokenize(text: str) -> list[str]:
        if UNK not in text:
            return encode(text)
        out: list[str] = []
        for i, part in enumerate(text.split(UNK)):
            if i:
                out.append(UNK)
            if part and not part.isspace():
                out.extend(encode(part))
        return out

    return tokenize


def detokenize(tokens: list[str]) -> str:
    """Pieces back to text (byte pieces of one character rejoined)."""
    text = "".join(MARK + UNK if t == UNK else t for t in tokens).replace(MARK, " ").strip()
    return re.sub(r"(?:<0x[0-9A-F]{2}>)+", _bytes_to_text, text)


def _bytes_to_text(match: re.Match) -> str:
    data = bytes(int(b, 16) for b in re.findall(r"<0x([0-9A-F]{2})>", match.group(0)))
    return data.decode("utf-8", errors="replace")


def digest(model: bytes) -> str:
    return hashlib.sha256(model).hexdigest()
