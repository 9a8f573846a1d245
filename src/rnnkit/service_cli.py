"""Command-line entry points of the service and export features (`rnnkit serve`,
`rnnkit export`), and the settings shared by the service, the command line and the Python API:
`Limits` (what one request may ask of the service) and `GenerationSettings` (how a language
model continues a prompt).

Each setting is a field of a frozen dataclass that carries its default, its help text and its
bounds. The same field gives the command-line flag (`max_tokens` -> `--max-tokens`), the check
made whenever the settings are built (a UsageError naming the setting), and the bounds and
default of the HTTP request field (rnnkit.serve). Light to import: heavy imports happen inside
the commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from rnnkit.config import flag
from rnnkit.errors import UsageError

MAX_SEED = 2**63 - 1  # seeds are 64-bit signed integers
PORTS = (1, 65535)


def setting(default: Any, help: str, **bounds: float) -> Any:
    """A settings field: its default, help text and bounds (`ge`, `gt`, `le`, as pydantic
    names them)."""
    return field(default=default, metadata={"help": help, **bounds})


def problem(value: Any, kind: type, bounds: dict[str, Any]) -> str | None:
    """What is wrong with `value` for a setting of type `kind` within `bounds`, or None."""
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    allowed = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, allowed):
        return "must be a number" if kind is float else "must be an integer"
    if kind is float and not math.isfinite(value):
        return "must be a finite number"
    if "gt" in bounds and not value > bounds["gt"]:
        return f"must be greater than {bounds['gt']}"
    if "ge" in bounds and not value >= bounds["ge"]:
        return "must not be negative" if bounds["ge"] == 0 else f"must be at least {bounds['ge']}"
    if "le" in bounds and not value <= bounds["le"]:
        return f"must be at most {bounds['le']}"
    return None


def check(name: str, value: Any, kind: type, **bounds: Any) -> None:
    """Raise a UsageError naming `name` if `value` breaks its type or bounds."""
    found = problem(value, kind, bounds)
    if found:
        raise UsageError(f"{name} {found}, got {value}")


class Settings:
    """Base of the frozen settings dataclasses: checked field by field on creation, one
    command-line flag per field."""

    label: ClassVar[Callable[[str], str]] = staticmethod(flag)  # how errors name a field

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            bounds = {k: v for k, v in f.metadata.items() if k != "help"}
            check(self.label(f.name), getattr(self, f.name), type(f.default), **bounds)

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser | Any) -> None:
        """One flag per field, `--max-tokens` for `max_tokens`; its default is the field's."""
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            kind, text = type(f.default), f.metadata["help"]
            if kind is bool:
                parser.add_argument(flag(f.name), dest=f.name, help=text,
                                    action=argparse.BooleanOptionalAction if f.default
                                    else "store_true", default=f.default)
            else:
                parser.add_argument(flag(f.name), dest=f.name, type=kind, default=f.default,
                                    metavar=f.name.upper(), help=f"{text} (default {f.default})")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Any:
        """The settings given by flags that `add_flags` made (UsageError if out of bounds)."""
        return cls(**{f.name: getattr(args, f.name)
                      for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Limits(Settings):
    """What one request may ask of the service (`rnnkit serve --max-texts 64 ...`)."""

    max_texts: int = setting(64, "texts per request", ge=1)
    max_explain_texts: int = setting(8, "texts per request with \"explain\": true, each a "
                                        "pass over n + 1 variants", ge=1)
    max_text_chars: int = setting(20_000, "characters per text and per prompt", ge=1)
    max_body_bytes: int = setting(1_000_000, "bytes per request body", ge=1)
    max_tokens: int = setting(200, "tokens per generation request", ge=1)
    max_batch: int = setting(64, "texts per forward pass of the micro-batcher", ge=1)
    max_wait_ms: float = setting(5.0, "how long a lone request waits to share a forward pass",
                                 ge=0.0, le=60_000.0)


@dataclass(frozen=True)
class GenerationSettings(Settings):
    """How a language model continues a prompt (`rnnkit generate`, POST /v1/generate)."""

    label: ClassVar[Callable[[str], str]] = staticmethod(str)  # errors name the field itself

    max_tokens: int = setting(30, "tokens to generate", ge=1)
    temperature: float = setting(1.0, "sampling temperature; 0 always takes the likeliest "
                                      "token", ge=0.0)
    top_k: int = setting(0, "sample among the k likeliest tokens (0: all)", ge=0)
    top_p: float = setting(1.0, "sample among the likeliest tokens whose probabilities add up "
                                "to p (1: all)", gt=0.0, le=1.0)
    seed: int = setting(0, "seed of the sampling: the same seed gives the same text", ge=0,
                        le=MAX_SEED)
    greedy: bool = setting(False, "always take the likeliest token")
    stop_at_eos: bool = setting(False, "stop at the end of a sentence (<eos>)")


def add_generation_flags(parser: argparse.ArgumentParser | Any) -> None:
    """`--max-tokens`, `--temperature`, `--top-k`, `--top-p`, `--seed`, `--greedy`,
    `--stop-at-eos`; read them back with `GenerationSettings.from_args(args)`."""
    GenerationSettings.add_flags(parser)


# --- commands -------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    check("--port", args.port, int, ge=PORTS[0], le=PORTS[1])
    check("--threads", args.threads, int, ge=0)
    limits = Limits.from_args(args)
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError("`rnnkit serve` needs FastAPI and uvicorn: install rnnkit[serve]"
                         ) from None
    from rnnkit.serve import create_app, load_models

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    app = create_app(load_models(args.runs), limits)
    # Everything loaded so far (libraries, models, vocabularies) lives as long as the process:
    # move it out of the collector's sight, so that its full collections, which would walk
    # millions of vocabulary objects while every request waits, stay short.
    gc.collect()
    gc.freeze()
    # On Ctrl-C or SIGTERM uvicorn stops accepting, lets open requests finish (up to the
    # grace period), then the app drains its batch queues.
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    timeout_graceful_shutdown=30)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; we are done
        pass
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rnnkit.export import export_run

    path = export_run(args.run, args.format, args.out)
    print(f"{args.format} model written to {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `serve` and `export` on the `rnnkit` parser."""
    p = sub.add_parser("serve", help="serve trained runs over HTTP (JSON API and a web page)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run directory, or NAME=RUN_DIR (several to serve several models)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000, help="1-65535 (default 8000)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default info)")
    Limits.add_flags(p.add_argument_group("limits"))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export a run's network for other runtimes (ONNX)")
    p.add_argument("run", metavar="RUN_DIR", help="the run directory to export")
    p.add_argument("--format", default="onnx", help="onnx (the only format for now)")
    p.add_argument("--out", help="file to write, which must not exist yet (default "
                   "RUN_DIR/model.onnx, rewritten by each export)")
    p.set_defaults(func=cmd_export)
