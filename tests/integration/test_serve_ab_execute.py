"""serve_ab.execute() with stand-in engine commands on 127.0.0.1: start, wait for /health, run
the client, stop the whole server process group; the mode's environment reaches the server."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
from pathlib import Path

import pytest

FAKE_SERVER = textwrap.dedent("""
    import http.server, os, subprocess, sys
    port, record = int(sys.argv[1]), sys.argv[2]
    # a child process, as real engines have (scheduler / workers): stop() must end it too
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(record, "a") as f:
        f.write(f"{os.environ.get('ATTN_SCHED_DISABLE')} {os.getpid()} {child.pid}\\n")
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")

FAKE_CLIENT = textwrap.dedent("""
    import json, sys, urllib.request
    port, out = sys.argv[1], sys.argv[2]
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health").status == 200
    rec = {"completed": 4, "output_throughput": 100.0, "mean_tpot_ms": 7.0, "mean_itl_ms": 7.0, "mean_ttft_ms": 40.0}
    open(out, "a").write(json.dumps(rec) + "\\n")
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def setup(serve_ab, tmp_path):
    args = serve_ab.build_parser().parse_args(
        ["--engine", "sglang", "--model", "m", "--runs", "1", "--workloads", "decode-c1", "--gsm8k",
         "--port", str(_free_port()), "--result-dir", str(tmp_path / "res"), "--server-timeout", "60"])
    o = serve_ab.options(args)
    (tmp_path / "server.py").write_text(FAKE_SERVER)
    (tmp_path / "client.py").write_text(FAKE_CLIENT)
    return o, tmp_path


def test_execute_runs_both_modes_and_stops_servers(serve_ab, setup):
    o, tmp = setup
    record = tmp / "servers.txt"
    steps = serve_ab.plan(o)
    for step in steps:  # same plan, stand-in programs
        if step.kind == "server":
            step.argv = [sys.executable, str(tmp / "server.py"), str(o.port), str(record)]
        elif step.kind == "gsm8k":
            step.argv = [sys.executable, "-c", "print('Accuracy: 0.850'); print('Invalid: 0.000')"]
        else:
            step.argv = [sys.executable, str(tmp / "client.py"), str(o.port), str(step.result)]
    step_stale = steps[1].result
    step_stale.parent.mkdir(parents=True)
    step_stale.write_text('{"completed": 1, "output_throughput": 1}\n')  # a stale line is removed first

    serve_ab.execute(o, steps)

    lines = [line.split() for line in record.read_text().splitlines()]
    assert [line[0] for line in lines] == ["1", "0"]  # off, then on
    for _, server_pid, child_pid in lines:
        assert not _alive(int(server_pid)) and not _alive(int(child_pid))
    results = serve_ab.collect(o)
    assert results[("off", "decode-c1")] == results[("on", "decode-c1")] == [
        {"output_throughput": 100.0, "mean_tpot_ms": 7.0, "mean_itl_ms": 7.0, "mean_ttft_ms": 40.0}]
    assert len(step_stale.read_text().splitlines()) == 1
    assert results[("on", "gsm8k")] == [{"accuracy": 0.85}]
    table = serve_ab.format_table(results, o.workloads, o.runs)
    assert table.splitlines()[-1] == "| GSM8K (few-shot, SGLang) | GSM8K accuracy | 0.850 | 0.850 | +0.0% |"


def test_server_that_dies_is_reported_with_its_log(serve_ab, setup):
    o, _ = setup
    steps = serve_ab.plan(o)
    steps[0].argv = [sys.executable, "-c", "import sys; print('no GPU'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match="exited with status 3 before it was healthy") as info:
        serve_ab.execute(o, steps)
    log = Path(str(info.value).rsplit("see ", 1)[1])
    assert log.read_text().strip() == "no GPU"
