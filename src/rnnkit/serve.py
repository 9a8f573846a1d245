"""HTTP service over the Python API: `create_app(load_models(["runs/imdb"]))`.

    GET  /               a web page: classify text with highlighted words, or generate text
    GET  /health         {"status": "ok", "models": [...]}
    GET  /v1/models      every served model;  GET /v1/model?model=NAME  one of them
    POST /v1/predict     {"texts": [...], "explain": false}            classifiers
    POST /v1/generate    {"prompt": "...", "max_tokens": 30, ...}      language models
    POST /v1/score       {"texts": ["line", ...]}                      language models
    GET  /docs, /openapi.json   the schema

Each model is loaded once. Predictions are micro-batched (rnnkit.batching); every model call
runs in one model thread, so the event loop keeps accepting requests meanwhile. Errors are
JSON: 400 wrong task or unusable input, 404 unknown model, 413 body too large, 422 a malformed
body or field (the field is named in `detail[].loc`); never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rnnkit.batching import MicroBatcher, ServiceClosing
from rnnkit.errors import UsageError
from rnnkit.explain import explain
from rnnkit.generate import LanguageModelRunner
from rnnkit.predict import Predictor
from rnnkit.rundir import RunDir

log = logging.getLogger("rnnkit.serve")


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64  # texts per request
    max_explain_texts: int = 8  # texts per request with "explain": true (n + 1 passes each)
    max_text_chars: int = 20_000  # characters per text (and per prompt)
    max_body_bytes: int = 1_000_000
    max_tokens: int = 200  # generation length
    max_batch: int = 64  # texts per forward pass of the micro-batcher
    max_wait_ms: float = 5.0  # how long a lone request waits for company


@dataclass
class ServedModel:
    name: str
    task: str  # "classify" | "lm"
    runner: Predictor | LanguageModelRunner
    batcher: MicroBatcher | None = None

    def info(self) -> dict[str, Any]:
        runner = self.runner
        record = {"name": self.name, "task": self.task, "vocab_size": len(runner.vocab),
                  "config": runner.cfg.to_dict()}
        if isinstance(runner, Predictor):
            record["labels"] = runner.names
        return record


def parse_model_specs(specs: list[str]) -> dict[str, Path]:
    """`RUN_DIR` or `NAME=RUN_DIR`, several allowed; a bare directory is named after itself."""
    models: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():
            name, path = Path(spec).name or spec, spec
        if not name or not path:
            raise UsageError(f"{spec!r}: give a run directory or NAME=RUN_DIR")
        if name in models:
            raise UsageError(f"two models are named {name!r}; name them: NAME=RUN_DIR")
        models[name] = Path(path)
    if not models:
        raise UsageError("give at least one run directory to serve")
    return models


def load_models(specs: list[str]) -> dict[str, ServedModel]:
    """Load every run once (raises UsageError for a bad directory)."""
    served = {}
    for name, path in parse_model_specs(specs).items():
        task = RunDir(path).meta()["task"]
        runner = Predictor.load(path) if task == "classify" else LanguageModelRunner.load(path)
        served[name] = ServedModel(name, task, runner)
    return served


# --- request bodies -------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="which served model (needed if several)")


class PredictBody(_Body):
    texts: list[str] = Field(..., min_length=1, description="texts to classify")
    explain: bool = Field(False, description="add per-token occlusion contributions")


class GenerateBody(_Body):
    prompt: str = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="default: 30 or the server's limit")
    temperature: float = Field(1.0, ge=0.0, description="0: always the likeliest token")
    top_k: int = Field(0, ge=0, description="0: no top-k cut")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    greedy: bool = False
    stop_at_eos: bool = False


class ScoreBody(_Body):
    texts: list[str] = Field(..., min_length=1, description="lines of text, as in a corpus")


def field_error(loc: list[Any], msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


# --- the application ------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: answer 413 to a request body larger than `limit` bytes."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:  # read the body up front, so a lying or absent length is caught too
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await self._refuse(scope, receive, send)
        body, sent = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.limit} bytes"},
                                status_code=413)
        await response(scope, receive, send)


def create_app(models: dict[str, ServedModel], limits: Limits = Limits()) -> FastAPI:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnkit-model")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for served in models.values():
            if isinstance(served.runner, Predictor):
                served.batcher = MicroBatcher(served.runner.predict, executor,
                                              limits.max_batch, limits.max_wait_ms / 1000)
                served.batcher.start()
        yield
        # uvicorn has stopped accepting and waited for open requests; finish queued work.
        for served in models.values():
            if served.batcher is not None:
                await served.batcher.close()
        executor.shutdown(wait=True)

    app = FastAPI(title="rnnkit", lifespan=lifespan,
                  description="Recurrent text models: classify, explain, generate, score.")
    app.state.models, app.state.limits = models, limits
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    _add_error_handlers(app)

    def pick(name: str | None, task: str | None = None) -> ServedModel:
        if name is None:
            if len(models) > 1:
                raise HTTPException(400, f"several models are served ({', '.join(models)}); "
                                         "say which with \"model\"")
            name = next(iter(models))
        if name not in models:
            raise HTTPException(404, f"no model named {name!r}; served: {', '.join(models)}")
        served = models[name]
        if task is not None and served.task != task:
            what = "a classifier" if task == "classify" else "a language model"
            raise HTTPException(400, f"model {name!r} is a {served.task} model; this route "
                                     f"needs {what}")
        return served

    def check_texts(texts: list[str], field: str = "texts") -> None:
        if len(texts) > limits.max_texts:
            raise field_error([field], f"at most {limits.max_texts} texts per request, "
                                       f"got {len(texts)}")
        for i, text in enumerate(texts):
            if len(text) > limits.max_text_chars:
                raise field_error([field, i], f"text longer than {limits.max_text_chars} "
                                              "characters")

    async def in_model_thread(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files("rnnkit").joinpath("web", "index.html").read_text("utf-8")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": list(models)}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"models": [served.info() for served in models.values()]}

    @app.get("/v1/model")
    async def model_info(model: str | None = None) -> dict:
        return pick(model).info()

    @app.post("/v1/predict")
    async def predict(body: PredictBody) -> dict:
        served = pick(body.model, "classify")
        check_texts(body.texts)
        if body.explain:
            if len(body.texts) > limits.max_explain_texts:
                raise field_error(["texts"], f"at most {limits.max_explain_texts} texts per "
                                             "request with \"explain\": true")
            found = await in_model_thread(explain, served.runner, body.texts)
            rows = [e.to_dict() for e in found]
        else:
            assert served.batcher is not None
            rows = [p.to_dict() for p in await served.batcher.submit(body.texts)]
        return {"model": served.name, "predictions": rows}

    @app.post("/v1/generate")
    async def generate(body: GenerateBody) -> dict:
        served = pick(body.model, "lm")
        if len(body.prompt) > limits.max_text_chars:
            raise field_error(["prompt"], f"longer than {limits.max_text_chars} characters")
        max_tokens = body.max_tokens or min(30, limits.max_tokens)
        if max_tokens > limits.max_tokens:
            raise field_error(["max_tokens"], f"at most {limits.max_tokens}")
        runner = served.runner
        assert isinstance(runner, LanguageModelRunner)
        tokens = await in_model_thread(
            lambda: runner.generate(body.prompt, max_tokens, body.temperature, body.top_k,
                                    body.top_p, body.seed, body.greedy, body.stop_at_eos))
        return {"model": served.name, "prompt": body.prompt, "tokens": tokens,
                "text": runner.detokenize(tokens)}

    @app.post("/v1/score")
    async def score(body: ScoreBody) -> dict:
        served = pick(body.model, "lm")
        check_texts(body.texts)
        runner = served.runner
        assert isinstance(runner, LanguageModelRunner)
        return {"model": served.name, **await in_model_thread(runner.score, body.texts)}

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The default echoes the offending input back; keep only where and what.
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(UsageError)
    async def unusable(request: Request, exc: UsageError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(ServiceClosing)
    async def closing(request: Request, exc: ServiceClosing) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed: %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
