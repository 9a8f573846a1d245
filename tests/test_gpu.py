"""Training and evaluation on a CUDA GPU (cuDNN). Skipped where torch sees no GPU, as in CI;
run them on a GPU machine with `pytest tests/test_gpu.py`."""

import json

import pytest
import torch

from rnnkit import api
from rnnkit.config import ModelConfig
from rnnkit.models import LanguageModel
from rnnkit.rundir import RunDir
from tiny_runs import train_classifier, train_lm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_classifier_trains_on_the_gpu_and_evaluates_the_same_on_the_cpu(tmp_path):
    run = train_classifier(tmp_path, "gpu-clf", device="cuda", ngram_order=2,
                           ngram_buckets=4096)
    results = json.loads((run / "results.json").read_text())
    assert results["valid"]["accuracy"] >= 0.8
    on_cpu = api.evaluate_run(run, "valid", log=lambda *a, **k: None, device="cpu")
    # cuDNN may use TF32 for fp32 RNNs: allow one of the 100 texts to land the other way.
    assert abs(on_cpu["accuracy"] - results["valid"]["accuracy"]) <= 0.0101
    assert abs(on_cpu["loss"] - results["valid"]["loss"]) < 1e-2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lm_trains_and_resumes_on_the_gpu(tmp_path, precision):
    straight = train_lm(tmp_path, "straight", device="cuda", precision=precision, epochs=20,
                        embedding_dim=32, hidden_size=32)
    cfg = RunDir(straight).config()
    quiet = dict(log=lambda *a, **k: None)
    split = tmp_path / "split"
    api.train_run(cfg, split, max_steps=25, **quiet)  # stops part-way
    assert not json.loads((split / "results.json").read_text())["finished"]
    api.train_run(cfg, split, resume=True, **quiet)
    ppl = [json.loads((run / "results.json").read_text())["valid"]["perplexity"]
           for run in (straight, split)]
    assert ppl[0] < 8  # a 12-word grammar: a uniform guess scores about 14
    # Not bit-exact on a GPU (cuDNN's backward may sum in any order), but the same run.
    assert ppl[1] == pytest.approx(ppl[0], rel=2e-2 if precision == "fp32" else 5e-2)
    saved = RunDir(split).load_trainer()
    assert saved is not None and saved["cuda_rng"] is not None


def test_one_token_steps_match_cudnn(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare fp32 with fp32
    torch.manual_seed(0)
    cfg = ModelConfig(task="lm", hidden_size=32, embedding_dim=16, num_layers=2)
    model = LanguageModel(50, cfg).cuda().eval()
    ids = torch.randint(0, 50, (3, 12), device="cuda")
    with torch.no_grad():
        whole, _ = model(ids, None)
        state, steps = None, []
        for t in range(ids.shape[1]):
            out, state = model(ids[:, t: t + 1], state)
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), whole, atol=1e-4, rtol=1e-4)
