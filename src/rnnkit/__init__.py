"""rnnkit: recurrent neural text models — sentiment classifiers and language models."""

__version__ = "0.1.0"
