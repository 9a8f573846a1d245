"""The HTTP service (rnnkit.serve) through FastAPI's TestClient and a real uvicorn server, on
tiny runs trained here; the settings it shares with the command line; `rnnkit.load`."""

import argparse
import asyncio
import dataclasses
import json
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

with warnings.catch_warnings():  # starlette would like httpx2; httpx works
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

import rnnkit
from rnnkit.cli import main
from rnnkit.errors import UsageError
from rnnkit.generate import GenerationSettings, LanguageModelRunner, add_generation_flags
from rnnkit.microbatch import MicroBatcher, ServiceClosing
from rnnkit.predict import Predictor
from rnnkit.runner import build_model, runner_class
from rnnkit.serve import Limits, create_app, load_models
from rnnkit.service_cli import MAX_SEED

POSITIVE = "the movie was wonderful and the story superb"
NEGATIVE = "a boring film , the plot was awful"


@pytest.fixture(scope="module")
def runs(tiny_runs):
    return tiny_runs


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


def test_docs_page_is_self_contained(client):
    """/docs works offline: no script or style from elsewhere, the schema read from here."""
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'fetch("/openapi.json")' in page.text and 'href="/openapi.json"' in page.text
    assert "http://" not in page.text and "https://" not in page.text and "cdn" not in page.text
    assert client.get("/redoc").status_code == 404


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


def _cli_json(capsys, *args):
    assert main([str(a) for a in args]) == 0
    return json.loads(capsys.readouterr().out)


def test_generate_and_score_agree_with_the_command_line(multi, runs, capsys, tmp_path):
    body = {"model": "words", "prompt": "the cat", "max_tokens": 6, "seed": 3}
    first = multi.post("/v1/generate", json=body).json()
    assert len(first["tokens"]) == 6 and first["text"]
    assert multi.post("/v1/generate", json=body).json() == first  # same seed, same text
    cli = ["generate", runs["lm"], "--prompt", "the cat", "--max-tokens", "6", "--json"]
    sampled = _cli_json(capsys, *cli, "--seed", "3")  # the same defaults everywhere
    assert (sampled["tokens"], sampled["text"]) == (first["tokens"], first["text"])

    greedy = multi.post("/v1/generate", json={**body, "greedy": True}).json()
    cold = multi.post("/v1/generate", json={**body, "temperature": 0, "top_k": 3,
                                            "top_p": 0.9}).json()
    expected = _cli_json(capsys, *cli, "--greedy")
    assert greedy["tokens"] == cold["tokens"] == expected["tokens"]
    assert greedy["text"] == expected["text"]
    assert LanguageModelRunner.load(runs["lm"]).generate("the cat", 6, greedy=True) == \
        expected["tokens"]

    lines = ["the cat sat on the mat", "a dog ran in the park"]
    scored = multi.post("/v1/score", json={"model": "words", "texts": lines}).json()
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    expected = _cli_json(capsys, "score", runs["lm"], tmp_path / "lines.txt", "--json")
    assert scored.pop("model") == "words"
    assert scored == pytest.approx(expected)
    assert scored["tokens"] == 13  # 12 words and 2 <eos>, less the first token


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
    ('{"texts": ["ok"], "explain": "yes"}', ["body", "explain"]),  # strict: no guessing
    ('{"texts": ["ok"], "explain": 1}', ["body", "explain"]),
    ('{"texts": ["ok"], "model": 1}', ["body", "model"]),
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
    ({"prompt": "the cat", "seed": 10**30}, "seed"),  # was a 500 (overflow in torch)
    ({"prompt": "the cat", "seed": MAX_SEED + 1}, "seed"),
    ({"prompt": "the cat", "seed": -1}, "seed"),
    ({"prompt": "the cat", "top_k": True}, "top_k"),  # strict ints: no bool
    ({"prompt": "the cat", "max_tokens": "5"}, "max_tokens"),
    ({"prompt": "the cat", "max_tokens": 5.0}, "max_tokens"),
    ({"prompt": "the cat", "greedy": "yes"}, "greedy"),
    ({"prompt": "the cat", "temperature": "NaN"}, "temperature"),
    ('{"prompt": "the cat", "temperature": NaN}', "temperature"),
    ('{"prompt": "the cat", "top_p": Infinity}', "top_p"),
])
def test_bad_generation_settings_are_422(lm_client, body, field):
    if isinstance(body, str):
        r = lm_client.post("/v1/generate", content=body,
                           headers={"content-type": "application/json"})
    else:
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
    assert "--max-batch must be at least 1, got 0" in err[2]


@pytest.mark.parametrize("flag,value,says", [
    ("--port", "70000", "--port must be at most 65535"),  # was: listening on 4464
    ("--port", "0", "--port must be at least 1"),
    ("--port", "-80", "--port must be at least 1"),
    ("--threads", "-1", "--threads must not be negative"),
    ("--max-wait-ms", "nan", "--max-wait-ms must be a finite number"),
    ("--max-wait-ms", "inf", "--max-wait-ms must be a finite number"),
    ("--max-wait-ms", "-1", "--max-wait-ms must not be negative"),
    ("--max-texts", "0", "--max-texts must be at least 1"),
    ("--max-text-chars", "-5", "--max-text-chars must be at least 1"),
    ("--max-body-bytes", "0", "--max-body-bytes must be at least 1"),
    ("--max-tokens", "0", "--max-tokens must be at least 1"),
    ("--max-explain-texts", "0", "--max-explain-texts must be at least 1"),
])
def test_serve_refuses_out_of_range_flags_in_one_line(runs, capsys, flag, value, says):
    assert main(["serve", str(runs["clf"]), flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rnnkit: error: {says}, got {float(value) if 'wait' in flag else value}"]


def test_limits_and_generation_flags_come_from_the_settings_fields(capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    from rnnkit.service_cli import add_commands

    add_commands(sub)
    args = parser.parse_args(["serve", "RUN"])
    assert Limits.from_args(args) == Limits()  # every field a flag, with the field's default
    args = parser.parse_args(["serve", "RUN", "--max-tokens", "7", "--max-wait-ms", "0"])
    assert Limits.from_args(args) == Limits(max_tokens=7, max_wait_ms=0.0)

    parser = argparse.ArgumentParser()
    add_generation_flags(parser)
    assert GenerationSettings.from_args(parser.parse_args([])) == GenerationSettings()
    given = parser.parse_args("--max-tokens 5 --temperature 0.5 --top-k 3 --top-p 0.9 --seed 7 "
                              "--greedy --stop-at-eos".split())
    assert GenerationSettings.from_args(given) == GenerationSettings(5, 0.5, 3, 0.9, 7, True,
                                                                     True)
    assert {a.dest for a in parser._actions} - {"help"} == {
        f.name for f in dataclasses.fields(GenerationSettings)}


def test_request_defaults_and_bounds_are_the_settings(lm_client):
    schema = lm_client.get("/openapi.json").json()["components"]["schemas"]["GenerateBody"]
    fields = schema["properties"]
    defaults = GenerationSettings()
    for name in ("temperature", "top_k", "top_p", "greedy", "stop_at_eos"):
        assert fields[name]["default"] == getattr(defaults, name), name
    assert fields["top_p"]["exclusiveMinimum"] == 0 and fields["top_p"]["maximum"] == 1
    assert fields["seed"]["anyOf"][0]["maximum"] == pytest.approx(MAX_SEED)  # JSON: a float
    info = lm_client.get("/v1/model").json()["generation"]  # what the web page shows
    assert info == {**dataclasses.asdict(defaults), "max_tokens": 20, "max_tokens_limit": 20}


@pytest.mark.parametrize("change,says", [
    ({"seed": 10**30}, "seed must be at most 9223372036854775807"),
    ({"seed": -1}, "seed must not be negative"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"top_p": 0.0}, "top_p must be greater than 0.0"),
    ({"top_k": -2}, "top_k must not be negative"),
])
def test_runner_refuses_out_of_range_settings(runs, change, says):
    runner = LanguageModelRunner.load(runs["lm"])
    with pytest.raises(UsageError, match=says):
        runner.generate("the cat", **change)
    assert len(runner.generate("the cat", 3, seed=MAX_SEED)) == 3


def test_seed_range_on_the_command_line(runs, capsys):
    base = ["generate", str(runs["lm"]), "--prompt", "the cat", "--max-tokens", "2"]
    assert main([*base, "--seed", str(10**30)]) == 2  # was a traceback
    assert main([*base, "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rnnkit: error: seed must be at most 9223372036854775807, got " + str(10**30),
                   "rnnkit: error: seed must not be negative, got -1"]
    assert main([*base, "--seed", str(MAX_SEED)]) == 0


def test_load_gives_the_runner_of_the_run_task(runs, tmp_path):
    clf, lm = rnnkit.load(runs["clf"]), rnnkit.load(str(runs["lm"]))
    assert type(clf) is Predictor and clf.task == "classify"
    assert type(lm) is LanguageModelRunner and lm.task == "lm"
    assert runner_class("classify") is Predictor and runner_class("lm") is LanguageModelRunner
    with pytest.raises(UsageError, match="unknown task"):
        runner_class("translate")
    with pytest.raises(UsageError, match="no such run directory"):
        rnnkit.load(tmp_path / "nowhere")
    # One builder for every task's network: the loaded weights fit it exactly.
    model = build_model(clf.cfg, clf.vocab, len(clf.names))
    assert model.load_state_dict(clf.model.state_dict()) is not None
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in clf.model.named_parameters()]
    assert type(build_model(lm.cfg, lm.vocab)) is type(lm.model)


# --- one keep-alive connection, a real server ------------------------------------------------


@contextmanager
def live_server(app):
    """`app` under uvicorn in a thread; yields its URL and the client address of each request,
    so that a test can tell whether two requests shared one connection."""
    peers = []

    async def recorded(scope, receive, send):
        if scope["type"] == "http":
            peers.append(tuple(scope["client"]))
        await app(scope, receive, send)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(recorded, host="127.0.0.1", port=port,
                                           log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", peers
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_bad_request_leaves_the_connection_open_for_the_next(runs):
    app = create_app(load_models([str(runs["lm"])]), Limits(max_tokens=20))
    with live_server(app) as (url, peers), httpx.Client(base_url=url, timeout=30) as http:
        bad = http.post("/v1/generate", json={"prompt": "the cat", "seed": 10**30})
        assert bad.status_code == 422 and _detail(bad)[0]["loc"] == ["body", "seed"]
        good = http.post("/v1/generate", json={"prompt": "the cat", "seed": 1, "max_tokens": 3})
        assert good.status_code == 200 and len(good.json()["tokens"]) == 3
    assert len(peers) == 2 and peers[0] == peers[1], peers  # one connection for both


def test_an_internal_failure_leaves_the_connection_open_for_the_next(runs):
    models = load_models([str(runs["lm"])])
    runner = models["lm"].runner
    real_sample = runner.sample

    def fragile(prompt, settings):
        if prompt == "explode":
            raise RuntimeError("simulated failure deep in the model")
        return real_sample(prompt, settings)

    runner.sample = fragile
    with live_server(create_app(models)) as (url, peers), \
            httpx.Client(base_url=url, timeout=30) as http:
        failed = http.post("/v1/generate", json={"prompt": "explode"})
        assert failed.status_code == 500 and _detail(failed).startswith("internal error")
        assert "simulated" not in failed.text and "Traceback" not in failed.text
        good = http.post("/v1/generate", json={"prompt": "the cat", "max_tokens": 2})
        assert good.status_code == 200
    assert len(peers) == 2 and peers[0] == peers[1], peers


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
