"""Command-line entry points of the service and export features (`rnnkit serve`,
`rnnkit export`). Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import dataclasses
import gc

from rnnkit.errors import UsageError


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError("`rnnkit serve` needs FastAPI and uvicorn: install rnnkit[serve]"
                         ) from None
    from rnnkit.serve import Limits, create_app, load_models

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    limits = Limits(max_texts=args.max_texts, max_text_chars=args.max_text_chars,
                    max_body_bytes=args.max_body_bytes, max_batch=args.max_batch,
                    max_wait_ms=args.max_wait_ms)
    for name, value in dataclasses.asdict(limits).items():
        if value < 0 or (value == 0 and name != "max_wait_ms"):
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
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
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--max-texts", type=int, default=64, help="texts per request")
    p.add_argument("--max-text-chars", type=int, default=20_000, help="characters per text")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--max-batch", type=int, default=64, help="texts per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a lone request waits to share a forward pass")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export a run's network for other runtimes (ONNX)")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--format", default="onnx", help="onnx (the only format for now)")
    p.add_argument("--out", help="file to write (default RUN_DIR/model.onnx)")
    p.set_defaults(func=cmd_export)
