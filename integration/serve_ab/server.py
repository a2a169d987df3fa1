"""One server's life: start in its own process group, wait for /health, talk JSON to it, stop it all.

Only 127.0.0.1 is ever contacted. Stopping waits until every process of the group is gone, so the
next server finds the GPUs and the port free.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .commands import HOST
from .errors import RunError


def url(port: int, path: str) -> str:
    return f"http://{HOST}:{port}{path}"


def post(port: int, path: str, body: dict | None, timeout: float):
    """POST ``body`` as JSON; the decoded JSON answer (or its text); RunError on any failure."""
    data = b"" if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url(port, path), data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise RunError(f"POST {path} answered {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise RunError(f"POST {path} failed: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def start(argv: list[str], env: dict[str, str], log: Path, port: int) -> subprocess.Popen:
    if not port_free(port):
        raise RunError(f"port {port} on {HOST} is taken (a server of an earlier run still alive?); nothing started")
    with open(log, "ab") as sink:
        return subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float) -> float:
    """Seconds until /health answered 200; RunError if the server exits or the time runs out."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RunError(f"server exited with status {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url(port, "/health"), timeout=5) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RunError(f"server not healthy at {url(port, '/health')} after {timeout:.0f} s")


def _group_running(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies left to be reaped do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_group(proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader
        if not _group_running(proc.pid):
            return True
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after 30 s, wait until all are gone."""
    for sig, timeout in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _wait_group(proc, timeout):
            break
    proc.wait()
