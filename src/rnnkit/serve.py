"""HTTP service over the Python API: `create_app(load_models(["runs/imdb"]))`.

    GET  /               a web page: classify text with highlighted words, or generate text
    GET  /health         {"status": "ok", "models": [...]}
    GET  /v1/models      every served model;  GET /v1/model?model=NAME  one of them
    POST /v1/predict     {"texts": [...], "explain": false}            classifiers
    POST /v1/generate    {"prompt": "...", "max_tokens": 30, ...}      language models
    POST /v1/score       {"texts": ["line", ...]}                      language models
    GET  /docs           the API reference, rendered from /openapi.json by a self-contained page
    GET  /openapi.json   the schema

Each model is loaded once (`rnnkit.load`). Predictions are micro-batched (rnnkit.microbatch);
every model call runs in one model thread, so the event loop keeps accepting requests meanwhile.
Errors are JSON: 400 wrong task or unusable input, 404 unknown model, 413 body too large, 422 a
malformed body or field (the field is named in `detail[].loc`), 500 an internal failure
(logged); never a traceback, and the connection stays open for the client's next request.
Request fields are strict: `"explain": "yes"` or `"top_k": true` is a 422, not a guess. The
generation fields' defaults and bounds are those of `GenerationSettings`, the server's limits
those of `Limits` (rnnkit.service_cli; `rnnkit serve --help` lists them as flags).

/docs is a page of rnnkit's own that renders /openapi.json in the browser, with no script or
style from elsewhere, so it works offline (FastAPI's default pages load Swagger UI and ReDoc
from a CDN; they are turned off).
"""

from __future__ import annotations

import asyncio
import dataclasses
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

from rnnkit.errors import UsageError
from rnnkit.explain import explain
from rnnkit.generate import DEFAULTS, LanguageModelRunner
from rnnkit.microbatch import MicroBatcher, ServiceClosing
from rnnkit.predict import Predictor
from rnnkit.runner import TASKS, load
from rnnkit.service_cli import GenerationSettings, Limits

__all__ = ["Limits", "ServedModel", "create_app", "load_models", "parse_model_specs"]
log = logging.getLogger("rnnkit.serve")


@dataclass
class ServedModel:
    name: str
    runner: Predictor | LanguageModelRunner
    batcher: MicroBatcher | None = None

    @property
    def task(self) -> str:  # "classify" | "lm"
        return self.runner.task

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
    return {name: ServedModel(name, load(path)) for name, path in parse_model_specs(specs).items()}


# --- request bodies -------------------------------------------------------------------------


class _Body(BaseModel):
    # strict: no "yes" for true, no true for 1, no "5" for 5; no NaN or infinity
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    model: str | None = Field(None, description="which served model (needed if several)")


class PredictBody(_Body):
    texts: list[str] = Field(..., min_length=1, description="texts to classify")
    explain: bool = Field(False, description="add per-token occlusion contributions")


GENERATION_FIELDS = {f.name: f for f in dataclasses.fields(GenerationSettings)}


def _setting(name: str, **change: Any) -> Any:
    """The request field of a generation setting: its default, bounds and help."""
    meta = dict(GENERATION_FIELDS[name].metadata)
    text = change.pop("description", meta.pop("help"))
    return Field(change.pop("default", GENERATION_FIELDS[name].default), description=text,
                 **meta, **change)


class GenerateBody(_Body):
    prompt: str = Field(..., min_length=1, description="the text to continue")
    max_tokens: int | None = _setting("max_tokens", default=None, description=(
        f"tokens to generate (default {DEFAULTS.max_tokens}, or the server's limit if lower)"))
    temperature: float = _setting("temperature")
    top_k: int = _setting("top_k")
    top_p: float = _setting("top_p")
    seed: int | None = _setting("seed", default=None, description=(
        "seed of the sampling: the same seed gives the same text (default 0)"))
    greedy: bool = _setting("greedy")
    stop_at_eos: bool = _setting("stop_at_eos")

    def settings(self, limits: Limits) -> GenerationSettings:
        """The settings this body asks for; left-out max_tokens and seed get their defaults."""
        given = self.model_dump(include=set(GENERATION_FIELDS))
        given["max_tokens"] = self.max_tokens or min(DEFAULTS.max_tokens, limits.max_tokens)
        given["seed"] = DEFAULTS.seed if self.seed is None else self.seed
        return GenerationSettings(**given)


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


class InternalErrors:
    """ASGI middleware: an unexpected exception is logged and answered with a JSON 500.

    It is not passed on to the server, which would close the connection: the client's next
    request on the same keep-alive connection is answered as usual."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            log.exception("request failed: %s %s", scope.get("method"), scope.get("path"))
            if started:  # half an answer is out: only closing the connection can tell
                raise
            response = JSONResponse({"detail": "internal error; see the server log"},
                                    status_code=500)
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

    app = FastAPI(title="rnnkit", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Recurrent text models: classify, explain, generate, score.")
    app.state.models, app.state.limits = models, limits
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(InternalErrors)  # outermost: catches what the others raise, too
    _add_error_handlers(app)
    generation = dataclasses.asdict(dataclasses.replace(
        DEFAULTS, max_tokens=min(DEFAULTS.max_tokens, limits.max_tokens)))

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
            raise HTTPException(400, f"model {name!r} is a {served.task} model; this route "
                                     f"needs {TASKS[task].what}")
        return served

    def describe(served: ServedModel) -> dict[str, Any]:
        record = served.info()
        if served.task == "lm":  # what /v1/generate uses when a field is left out
            record["generation"] = {**generation, "max_tokens_limit": limits.max_tokens}
        return record

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
        return _web_page("index.html")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> str:
        return _web_page("docs.html")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": list(models)}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"models": [describe(served) for served in models.values()]}

    @app.get("/v1/model")
    async def model_info(model: str | None = None) -> dict:
        return describe(pick(model))

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
        settings = body.settings(limits)
        if settings.max_tokens > limits.max_tokens:
            raise field_error(["max_tokens"], f"at most {limits.max_tokens}")
        runner = served.runner
        assert isinstance(runner, LanguageModelRunner)
        tokens = await in_model_thread(runner.sample, body.prompt, settings)
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


def _web_page(name: str) -> str:
    return resources.files("rnnkit").joinpath("web", name).read_text("utf-8")
