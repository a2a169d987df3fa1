"""The profile window: a short, steady decode phase recorded by the engine's own torch profiler.

A few long streaming requests are started; once every one has streamed its first token, all are
decoding (no prefill left), and the profiler runs for ``seconds``: SGLang ``/start_profile`` with
``output_dir`` and GPU activity only, vLLM ``/start_profile`` with the server's ``--profiler-config``.
``/stop_profile`` returns after the traces are written; the requests are then dropped (the engines
abort a request whose client disconnects).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

from . import greedy, server
from .errors import RunError

REQUESTS = 4
PROMPT_LEN = 128
FIRST_TOKEN_TIMEOUT = 300.0


class _Stream(threading.Thread):
    """One streaming request, read line by line until it ends or ``halt`` is set."""

    def __init__(self, port: int, path: str, body: dict):
        super().__init__(daemon=True)
        self.request = urllib.request.Request(server.url(port, path), data=json.dumps(body).encode(), method="POST",
                                              headers={"Content-Type": "application/json"})
        self.first = threading.Event()
        self.ended = threading.Event()
        self.halt = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            with urllib.request.urlopen(self.request, timeout=FIRST_TOKEN_TIMEOUT) as resp:
                for line in resp:
                    if line.startswith(b"data:"):
                        self.first.set()
                    if self.halt.is_set():
                        break
        except Exception as exc:  # reported by the caller, whatever it was
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended.set()


def start_body(engine: str, trace_dir: Path) -> dict | None:
    """SGLang takes the trace settings per request; vLLM took them at server start."""
    if engine == "sglang":
        return {"output_dir": str(trace_dir.resolve()), "activities": ["GPU"], "with_stack": False,
                "record_shapes": False}
    return None


def trace_files(trace_dir: Path) -> list[Path]:
    return sorted(p for p in trace_dir.rglob("*") if p.name.endswith((".json", ".json.gz")))


def record(engine: str, port: int, model: str, trace_dir: Path, seconds: float, tokens: int) -> dict:
    """Run the window; the trace files and whether any request ended inside it."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    ids = greedy.prompts()[-1][:PROMPT_LEN]
    streams = [_Stream(port, greedy.PATH[engine], greedy.request_body(engine, model, ids, tokens, stream=True))
               for _ in range(REQUESTS)]
    for s in streams:
        s.start()
    try:
        deadline = time.monotonic() + FIRST_TOKEN_TIMEOUT
        for s in streams:
            while not s.first.is_set() and not s.ended.is_set() and time.monotonic() < deadline:
                s.first.wait(0.05)
            if not s.first.is_set():
                raise RunError(f"profile window: a request streamed no token ({s.error or 'timed out'})")
        server.post(port, "/start_profile", start_body(engine, trace_dir), timeout=300)
        time.sleep(seconds)
        server.post(port, "/stop_profile", None, timeout=600)
        ended_early = any(s.ended.is_set() for s in streams)
    finally:
        for s in streams:
            s.halt.set()
        for s in streams:
            s.join(timeout=30)
    files = trace_files(trace_dir)
    if not files:
        raise RunError(f"profile window: the profiler wrote no trace into {trace_dir}")
    return {"files": files, "request_ended_inside": ended_early}
