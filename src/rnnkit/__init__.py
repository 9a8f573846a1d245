"""rnnkit: recurrent neural text models — sentiment classifiers and language models.

    import rnnkit
    clf = rnnkit.load("runs/imdb-seed")      # the runner for the run's task
    clf.predict(["I loved this movie"])
"""

from __future__ import annotations

from typing import Any

__version__ = "0.6.2"
__all__ = ["load", "__version__"]


def __getattr__(name: str) -> Any:
    # `rnnkit.load` imports torch and the models on first use, not with `import rnnkit`.
    if name == "load":
        from rnnkit.runner import load

        globals()["load"] = load
        return load
    raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")
