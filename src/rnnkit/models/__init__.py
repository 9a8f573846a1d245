"""Models: the shared encoder, the classifier and the language model."""

from rnnkit.models.classifier import Classifier
from rnnkit.models.encoder import Encoder
from rnnkit.models.lm import LanguageModel

__all__ = ["Classifier", "Encoder", "LanguageModel"]
