"""Every named preset validates and builds its model (on the meta device: no memory used)."""

import pytest
import torch

from rnnkit.config import PRESETS, RunConfig, preset
from rnnkit.models import Classifier, LanguageModel


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_validates_round_trips_and_builds(name):
    cfg = preset(name)
    assert cfg.preset == name
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # what config.json stores reloads
    with torch.device("meta"):
        if cfg.model.task == "lm":
            model = LanguageModel(10_000, cfg.model)
        else:
            buckets = cfg.data.ngram_buckets if cfg.data.ngram_order else 0
            model = Classifier(10_000, 2, cfg.model, 0, buckets)
    sizes = {n: p.shape for n, p in model.named_parameters()}
    assert sizes["encoder.embedding.weight"] == (10_000, cfg.model.embedding_dim)
    assert any(n.startswith("encoder.") and "weight_hh" in n for n in sizes)


def test_unknown_preset_names_the_choices():
    from rnnkit.errors import UsageError

    with pytest.raises(UsageError, match="choose one of: .*imdb-seed"):
        preset("imdb-sed")
