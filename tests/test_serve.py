"""The HTTP service (rnnkit.serve) through FastAPI's TestClient, on tiny runs trained here."""

import asyncio
import json
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

with warnings.catch_warnings():  # starlette would like httpx2; httpx works
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

from rnnkit.batching import MicroBatcher, ServiceClosing
from rnnkit.cli import main
from rnnkit.predict import Predictor
from rnnkit.serve import Limits, create_app, load_models
from tiny_runs import train_classifier, train_lm

POSITIVE = "the movie was wonderful and the story superb"
NEGATIVE = "a boring film , the plot was awful"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {"clf": train_classifier(root), "lm": train_lm(root)}


@pytest.fixture(scope="module")
def client(runs):
    limits = Limits(max_texts=8, max_text_chars=500, max_body_bytes=4000, max_tokens=20)
    with TestClient(create_app(load_models([str(runs["clf"])]), limits)) as client:
        yield client


@pytest.fixture(scope="module")
def lm_client(runs):
    with TestClient(create_app(load_models([str(runs["lm"])]), Limits(max_tokens=20))) as client:
        yield client


@pytest.fixture(scope="module")
def multi(runs):
    models = load_models([f"sentiment={runs['clf']}", f"words={runs['lm']}"])
    with TestClient(create_app(models)) as client:
        yield client


def test_health_model_info_schema_and_page(client):
    assert client.get("/health").json() == {"status": "ok", "models": ["clf"]}
    info = client.get("/v1/model").json()
    assert info["task"] == "classify" and info["labels"] == ["neg", "pos"]
    assert info["vocab_size"] > 20 and info["config"]["model"]["hidden_size"] == 16
    assert client.get("/v1/models").json()["models"] == [info]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/v1/model", "/v1/models", "/v1/predict", "/v1/generate",
            "/v1/score"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="text"' in page.text and "occlusion" in page.text


def test_predict_matches_the_python_api(client, runs):
    response = client.post("/v1/predict", json={"texts": [POSITIVE, NEGATIVE]})
    assert response.status_code == 200
    rows = response.json()["predictions"]
    assert [r["label"] for r in rows] == ["pos", "neg"]
    direct = Predictor.load(runs["clf"]).predict([POSITIVE, NEGATIVE])
    for row, expected in zip(rows, direct):
        assert row["probability"] == pytest.approx(expected.probability, abs=1e-6)
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert "tokens" not in row


def test_predict_explain_names_the_deciding_words(client):
    text = "The plot was WONDERFUL, the actors fun"
    row = client.post("/v1/predict", json={"texts": [text], "explain": True}).json()[
        "predictions"][0]
    assert row["label"] == "pos"
    tokens = row["tokens"]
    assert [t["token"] for t in tokens] == ["the", "plot", "was", "wonderful", ",", "the",
                                            "actors", "fun"]
    for t in tokens:  # spans point into the original text
        assert text[t["start"]: t["end"]].lower() == t["token"]
    top = max(tokens, key=lambda t: t["contribution"])
    assert top["token"] in ("wonderful", "fun") and top["contribution"] > 0.01


def test_several_models_by_name(multi):
    assert multi.get("/health").json()["models"] == ["sentiment", "words"]
    assert [m["name"] for m in multi.get("/v1/models").json()["models"]] == ["sentiment", "words"]
    assert multi.get("/v1/model", params={"model": "words"}).json()["task"] == "lm"
    assert multi.get("/v1/model").status_code == 400  # which one?
    assert multi.get("/v1/model", params={"model": "nope"}).status_code == 404
    body = {"texts": [POSITIVE], "model": "sentiment"}
    assert multi.post("/v1/predict", json=body).json()["predictions"][0]["label"] == "pos"


def test_generate_and_score(multi):
    body = {"model": "words", "prompt": "the cat", "max_tokens": 6, "seed": 3}
    first = multi.post("/v1/generate", json=body).json()
    assert len(first["tokens"]) == 6 and first["text"]
    assert multi.post("/v1/generate", json=body).json() == first  # same seed, same text
    greedy = multi.post("/v1/generate", json={**body, "temperature": 0, "top_k": 3,
                                              "top_p": 0.9}).json()
    assert len(greedy["tokens"]) == 6
    scored = multi.post("/v1/score", json={"model": "words",
                                           "texts": ["the cat sat on the mat"]}).json()
    assert scored["tokens"] == 6 and scored["perplexity"] > 1


def _detail(response):
    body = response.json()
    assert "Traceback" not in response.text and "File \"" not in response.text
    return body["detail"]


def test_wrong_task_and_unusable_input_are_400(multi):
    r = multi.post("/v1/predict", json={"texts": ["hi"], "model": "words"})
    assert r.status_code == 400 and "needs a classifier" in _detail(r)
    r = multi.post("/v1/generate", json={"prompt": "hi", "model": "sentiment"})
    assert r.status_code == 400 and "needs a language model" in _detail(r)
    r = multi.post("/v1/score", json={"texts": ["hi"], "model": "sentiment"})
    assert r.status_code == 400
    r = multi.post("/v1/predict", json={"texts": ["hi"]})  # several models, none named
    assert r.status_code == 400 and "sentiment" in _detail(r)
    r = multi.post("/v1/generate", json={"prompt": "zebra quantum", "model": "words"})
    assert r.status_code == 400 and "vocabulary" in _detail(r)
    r = multi.post("/v1/predict", json={"texts": ["hi"], "model": "ghost"})
    assert r.status_code == 404


@pytest.mark.parametrize("body,loc", [
    ('{"texts": ["unclosed"', ["body"]),
    ("not json at all", ["body"]),
    ("{}", ["body", "texts"]),
    ('{"texts": "one string"}', ["body", "texts"]),
    ('{"texts": [1]}', ["body", "texts", 0]),
    ('{"texts": []}', ["body", "texts"]),
    ('{"texts": ["ok"], "explain": "maybe"}', ["body", "explain"]),
    ('{"texts": ["ok"], "colour": "red"}', ["body", "colour"]),
    (json.dumps({"texts": ["a"] * 9}), ["body", "texts"]),  # max_texts 8
    (json.dumps({"texts": ["fine", "x" * 501]}), ["body", "texts", 1]),  # max_text_chars 500
])
def test_malformed_bodies_are_422_naming_the_field(client, body, loc):
    r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    errors = _detail(r)
    assert any(e["loc"][: len(loc)] == loc for e in errors), errors


@pytest.mark.parametrize("body,field", [
    ({"prompt": "the cat", "max_tokens": 21}, "max_tokens"),  # max_tokens limit 20
    ({"prompt": "the cat", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "the cat", "top_p": 0}, "top_p"),
    ({"prompt": "the cat", "temperature": -1}, "temperature"),
    ({"prompt": ""}, "prompt"),
])
def test_bad_generation_settings_are_422(lm_client, body, field):
    r = lm_client.post("/v1/generate", json=body)
    assert r.status_code == 422
    assert [e["loc"] for e in _detail(r)] == [["body", field]]
    r = lm_client.post("/v1/generate", json={"prompt": "the"})
    assert r.status_code == 200 and len(r.json()["tokens"]) == 20


def test_oversized_bodies_are_413_and_the_service_keeps_answering(client):
    big = json.dumps({"texts": ["word " * 90] * 9})  # > 4000 bytes
    r = client.post("/v1/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than 4000" in _detail(r)

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 500
    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/predict", json={"texts": [POSITIVE]})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "pos"
    assert client.get("/health").status_code == 200


def test_parallel_requests_are_batched_and_answered_correctly(runs):
    limits = Limits(max_batch=32, max_wait_ms=20)
    app = create_app(load_models([str(runs["clf"])]), limits)
    texts = [(POSITIVE if i % 2 == 0 else NEGATIVE) + f" {'the ' * (i % 5)}" for i in range(64)]
    expected = [p.label for p in Predictor.load(runs["clf"]).predict(texts)]
    with TestClient(app) as client, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(
            lambda text: client.post("/v1/predict", json={"texts": [text]}), texts))
        batcher = app.state.models["clf"].batcher
        assert [r.json()["predictions"][0]["label"] for r in responses] == expected
        assert batcher.items == 64
        assert batcher.batches < 64 and batcher.largest > 1, vars(batcher)


def test_batcher_drains_queued_work_on_close():
    calls = []

    def slow_double(items):
        time.sleep(0.02)
        calls.append(len(items))
        return [2 * x for x in items]

    async def scenario():
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(slow_double, executor, max_batch=4, max_wait=0.001)
            batcher.start()
            pending = [asyncio.create_task(batcher.submit([i, i + 100])) for i in range(6)]
            await asyncio.sleep(0.005)  # the first batch is running; the rest are queued
            await batcher.close()
            results = await asyncio.gather(*pending)
            with pytest.raises(ServiceClosing):
                await batcher.submit([1])
            return results

    results = asyncio.run(scenario())
    assert results == [[2 * i, 2 * i + 200] for i in range(6)]
    assert max(calls) <= 4 and sum(calls) == 12


def test_batcher_passes_model_errors_to_each_request():
    def broken(items):
        raise ValueError("boom")

    async def scenario():
        with ThreadPoolExecutor(1) as executor:
            batcher = MicroBatcher(broken, executor)
            batcher.start()
            outcomes = await asyncio.gather(batcher.submit([1]), batcher.submit([2]),
                                            return_exceptions=True)
            await batcher.close()
            return outcomes

    assert all(isinstance(o, ValueError) for o in asyncio.run(scenario()))


def test_serve_command_user_errors(tmp_path, runs, capsys):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert main(["serve", f"a={runs['clf']}", f"a={runs['lm']}"]) == 2
    assert main(["serve", str(runs["clf"]), "--max-batch", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("rnnkit: error: ") for line in err)
    assert "no such run directory" in err[0] and "named 'a'" in err[1]
    assert "--max-batch must be positive" in err[2]


def test_an_internal_failure_is_a_json_500_and_the_service_recovers(runs):
    models = load_models([str(runs["clf"])])
    predictor = models["clf"].runner
    real_predict = predictor.predict

    def fragile(texts):
        if "explode" in texts:
            raise RuntimeError("simulated failure deep in the model")
        return real_predict(texts)

    predictor.predict = fragile
    with TestClient(create_app(models, Limits(max_wait_ms=0)),
                    raise_server_exceptions=False) as client:
        r = client.post("/v1/predict", json={"texts": ["explode"]})
        assert r.status_code == 500
        assert "simulated" not in r.text and "Traceback" not in r.text
        assert r.json()["detail"].startswith("internal error")
        r = client.post("/v1/predict", json={"texts": [POSITIVE]})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "pos"
