"""Load test for `rnnkit serve` (a benchmark, not a test).

    python benchmarks/serve_load.py runs/imdb-seed --clients 32 --seconds 20

Starts the server on a free loopback port in a subprocess, then runs N concurrent clients
(asyncio, one keep-alive connection each) that post one request after another for a bounded
time, and reports requests/s, predictions/s, p50/p99 latency and errors as a table and JSON.
Project target (imdb-seed run, 32 clients): >= 500 predictions/s with p99 <= 100 ms. Run it
on a quiet machine: other load on the cores changes the figures a lot.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def load_texts(path: str | None, limit: int = 2000) -> list[str]:
    """Review texts: a .jsonl[.gz] with a "text" field or a plain text file, one per line.
    Default: the IMDB test split from $RNNKIT_MIRROR, else synthetic sentences."""
    if path is None:
        mirror = os.environ.get("RNNKIT_MIRROR")
        candidate = Path(mirror) / "imdb" / "test.jsonl.gz" if mirror else None
        if candidate is None or not candidate.is_file():
            rng = random.Random(0)
            words = "the a film movie was great awful plot actors boring superb and it".split()
            return [" ".join(rng.choices(words, k=rng.randint(20, 250))) for _ in range(limit)]
        path = str(candidate)
    opener = gzip.open if path.endswith(".gz") else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if ".jsonl" in path:
                line = json.loads(line)["text"]
            if line.strip():
                texts.append(line.strip())
            if len(texts) >= limit * 5:
                break
    random.Random(0).shuffle(texts)
    return texts[:limit]


def start_server(run: str, port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "rnnkit", "serve", run, "--port", str(port),
               "--log-level", "warning", *extra]
    proc = subprocess.Popen(command)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


class Connection:
    """A minimal keep-alive HTTP/1.1 client: httpx spends several ms of CPU per request, enough
    to make the load generator, not the server, the bottleneck on a small machine."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(),
                                                             len(payload), payload))
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def client(port: int, texts: list[str], per_request: int, seed: int, start_at: float,
                 until: float, latencies: list[float], errors: list[str]) -> None:
    rng = random.Random(seed)
    connection = Connection("127.0.0.1", port)
    while time.perf_counter() < until:
        payload = json.dumps({"texts": rng.sample(texts, per_request)}).encode()
        sent = time.perf_counter()
        try:
            status, _ = await connection.post("/v1/predict", payload)
            ok = status == 200
            if not ok:
                errors.append(f"HTTP {status}")
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            ok = False
            errors.append(type(exc).__name__)
            connection.close()
        if ok and sent >= start_at:  # requests sent during the warm-up are not counted
            latencies.append(time.perf_counter() - sent)
    connection.close()


async def load(port: int, texts: list[str], clients: int, seconds: float, warmup: float,
               per_request: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    now = time.perf_counter()
    start_at, until = now + warmup, now + warmup + seconds
    await asyncio.gather(*(client(port, texts, per_request, i, start_at, until, latencies,
                                  errors) for i in range(clients)))
    elapsed = time.perf_counter() - start_at
    latencies.sort()

    def percentile(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies \
            else float("nan")

    return {"clients": clients, "seconds": round(elapsed, 2), "texts_per_request": per_request,
            "requests": len(latencies), "requests_per_s": len(latencies) / elapsed,
            "predictions_per_s": len(latencies) * per_request / elapsed,
            "p50_ms": percentile(0.50), "p99_ms": percentile(0.99), "errors": len(errors),
            "error_kinds": sorted(set(errors))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a classifier run directory")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--data", help="texts to send (.jsonl[.gz] with 'text', or .txt)")
    parser.add_argument("--out", default="serve_load.json", help="JSON results file")
    parser.add_argument("--server-args", default="",
                        help="extra `rnnkit serve` flags, e.g. '--threads 2 --max-batch 64'")
    args = parser.parse_args()

    texts = load_texts(args.data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(args.run, port, args.server_args.split())
    try:
        result = asyncio.run(load(port, texts, args.clients,
                                  args.seconds, args.warmup, args.texts_per_request))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    result["run"] = args.run
    result["meets_target"] = result["predictions_per_s"] >= 500 and result["p99_ms"] <= 100
    rows = [("clients", f"{result['clients']}"), ("requests/s", f"{result['requests_per_s']:.1f}"),
            ("predictions/s", f"{result['predictions_per_s']:.1f}"),
            ("p50 latency", f"{result['p50_ms']:.1f} ms"),
            ("p99 latency", f"{result['p99_ms']:.1f} ms"), ("errors", f"{result['errors']}"),
            ("target met", "yes" if result["meets_target"] else "no")]
    for name, value in rows:
        print(f"{name:>14}  {value}")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"results written to {args.out}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
