"""Plans executed end to end against stand-in engines on 127.0.0.1, through the real command lines.

The engine environment (``--env``) puts a ``python3`` first on PATH that runs a stand-in for
``sglang.launch_server`` / ``vllm ... serve`` (health, greedy and streaming requests, start/stop
profile writing a chrome trace, plugin log lines, a child process like real engines' workers) and
for the benchmark clients (a result file in the engine's format); anything else goes to Python.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from integration.serve_ab.runner import _cause

ROOT = Path(__file__).resolve().parents[2]
LAYERS = 4  # the models_dir fixture's num_hidden_layers

SERVER = textwrap.dedent("""
    import gzip, http.server, json, os, subprocess, sys, time
    argv = sys.argv[1:]
    engine = "sglang" if "sglang.launch_server" in argv else "vllm"
    port = int(argv[argv.index("--port") + 1])
    model = argv[argv.index("--model-path" if engine == "sglang" else "serve") + 1]
    layers = json.load(open(os.path.join(model, "config.json")))["num_hidden_layers"]
    tmp = os.environ["FAKE_DIR"]
    disabled = os.environ.get("ATTN_SCHED_DISABLE") == "1"
    variant = "off" if disabled else "on"
    baseline = "attn_sched_seed_baseline" in os.environ.get("SGLANG_PLUGINS", "")
    if os.path.exists(os.path.join(tmp, f"fail-{variant}")):
        print("no GPU", flush=True)
        sys.exit(3)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a worker
    keys = ("ATTN_SCHED_DISABLE", "ATTN_SCHED_SGLANG_MODE", "SGLANG_PLUGINS", "PYTHONPATH",
            "ATTN_SCHED_SUMMARY_INTERVAL")
    with open(os.path.join(tmp, "servers.jsonl"), "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "child": child.pid, "argv": argv,
                            "env": {k: os.environ.get(k) for k in keys}}) + "\\n")
    log = "attn-sched: disabled by ATTN_SCHED_DISABLE" if disabled else "attn-sched: active for x with FA3 build y"
    print(f"[2026-11-27 10:00:00 TP0] {log}", file=sys.stderr, flush=True)
    if not disabled:
        print("[2026-11-27 10:00:05 TP0] attn-sched: prepare launches avoided 30: 0 in 0 CUDA-graph replays (0 graphs "
              "captured), 30 in 40 intercepted FA3 calls (10 steps; metadata computed 10, injected 40); passed "
              "through: none", file=sys.stderr, flush=True)
    differ = os.path.exists(os.path.join(tmp, f"differ-{variant}"))
    state = {}

    def ids(body):
        n = body.get("max_new_tokens") or body.get("sampling_params", {}).get("max_new_tokens") or body["max_tokens"]
        prompt = body.get("input_ids") or body["prompt"]
        out = [(sum(prompt) + i) % 997 for i in range(n)]
        if differ:
            out[-1] += 1
        return out

    def logprob_answer(body, out):
        # the engines' logprob answer shapes (vLLM 0.26 completions, SGLang 0.5.16 /generate meta_info)
        prompt = body.get("input_ids") or body["prompt"]
        lps = [-(t % 7) / 8 - (0.001 if differ and i == len(out) - 1 else 0.0) for i, t in enumerate(out)]
        if "input_ids" in body:
            return {"output_ids": out, "meta_info": {
                "input_token_logprobs": [[None, prompt[0], None]] + [[-1.0, t, None] for t in prompt[1:]],
                "output_token_logprobs": [[lp, t, None] for lp, t in zip(lps, out)],
                "input_top_logprobs": [None] + [[[-0.5, 3, None]] for _ in prompt[1:]],
                "output_top_logprobs": [[[lp, t, None]] for lp, t in zip(lps, out)]}}
        return {"choices": [{"token_ids": out, "prompt_token_ids": prompt, "logprobs": {
            "token_logprobs": lps, "tokens": [f"token_id:{t}" for t in out],
            "top_logprobs": [{f"token_id:{t}": lp} for lp, t in zip(lps, out)]},
            "prompt_logprobs": [None] + [{str(t): {"logprob": -1.0}, "3": {"logprob": -0.5}} for t in prompt[1:]]}]}

    def trace(directory):
        os.makedirs(directory, exist_ok=True)
        per_layer = baseline
        events = []
        for _ in range(10):
            events += [] if per_layer else [{"cat": "kernel", "name": "flash::prepare_varlen_num_blocks_kernel"}]
            for _ in range(layers):
                events += [{"cat": "kernel", "name": "flash::prepare_varlen_num_blocks_kernel"}] if per_layer else []
                events += [{"cat": "kernel", "name": "cutlass::device_kernel<flash::FlashAttnFwdSm90<x>>"}]
        events += [{"cat": "cuda_runtime", "ph": "X", "name": "cudaGraphLaunch", "ts": float(i), "dur": 0.5,
                    "args": {"correlation": i}} for i in range(20)]
        with gzip.open(os.path.join(directory, f"{time.time()}-TP-0.trace.json.gz"), "wt") as f:
            json.dump({"traceEvents": events}, f)

    class H(http.server.BaseHTTPRequestHandler):
        def _reply(self, code, payload=None):
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._reply(200 if self.path == "/health" else 404)

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw) if raw else None
            if self.path in ("/generate", "/v1/completions"):
                out = ids(body)
                if body.get("stream"):
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for i in out:
                            self.wfile.write(b"data: " + json.dumps({"token": i}).encode() + b"\\n\\n")
                            self.wfile.flush()
                            time.sleep(0.01)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                return self._reply(200, logprob_answer(body, out))
            if self.path == "/start_profile":
                if engine == "sglang":
                    state["dir"] = body["output_dir"]
                else:
                    state["dir"] = json.loads(argv[argv.index("--profiler-config") + 1])["torch_profiler_dir"]
                return self._reply(200)
            if self.path == "/stop_profile":
                trace(state["dir"])
                return self._reply(200)
            self._reply(404)

        def log_message(self, *a):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
""")

CLIENT = textwrap.dedent("""
    import json, os, sys
    argv = sys.argv[1:]
    if os.path.exists(os.path.join(os.environ["FAKE_DIR"], "fail-client")):
        print("client crashed"); sys.exit(5)
    rec = {"completed": 1, "output_throughput": 100.0, "mean_tpot_ms": 7.0, "mean_itl_ms": 7.0, "mean_ttft_ms": 40.0}
    if "--output-file" in argv:
        path = argv[argv.index("--output-file") + 1]
        open(path, "a").write(json.dumps(rec) + "\\n")
    else:
        path = os.path.join(argv[argv.index("--result-dir") + 1], argv[argv.index("--result-filename") + 1])
        open(path, "w").write(json.dumps(rec))
""")

SHIM = """#!/bin/bash
case " $* " in
  *" sglang.launch_server "*|*" vllm.entrypoints.cli.main serve "*) exec "{py}" "{dir}/server.py" "$@" ;;
  *" sglang.bench_serving "*|*" vllm.entrypoints.cli.main bench "*) exec "{py}" "{dir}/client.py" "$@" ;;
  *) exec "{py}" "$@" ;;
esac
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def engine(tmp_path):
    """``--env`` of the stand-in engine; its records land in ``tmp_path / 'fake'``."""
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    (fake / "server.py").write_text(SERVER)
    (fake / "client.py").write_text(CLIENT)
    shim = fake / "bin" / "python3"
    shim.write_text(SHIM.format(py=sys.executable, dir=fake))
    shim.chmod(0o755)
    env_sh = fake / "env.sh"
    env_sh.write_text(f'export PATH="{fake}/bin:$PATH" FAKE_DIR="{fake}"\n')
    return fake


def serve_ab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "integration.serve_ab", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def plan_args(engine_name, engine_dir, models_dir, out, *extra):
    return ["run", "--engine", engine_name, "--env", str(engine_dir / "env.sh"), "--models", "m",
            "--models-dir", str(models_dir), "--workloads", "decode-c1", "--scale", "0.01", "--logprob-tokens", "8",
            "--profile-seconds", "0.1", "--profile-tokens", "300", "--port", str(_free_port()),
            "--server-timeout", "60", "--out", str(out), *extra]


def servers(engine_dir: Path) -> list[dict]:
    path = engine_dir / "servers.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def state(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_sglang_plan_end_to_end(tmp_path, engine, models_dir):
    out = tmp_path / "out"
    done = serve_ab(*plan_args("sglang", engine, models_dir, out, "--variants", "off,on-replace,seed-baseline",
                               "--repeats", "1"))
    assert done.returncode == 0, done.stdout + done.stderr
    runs = state(out)["runs"]
    assert list(runs) == ["m-tp1-r1-off", "m-tp1-r1-on-replace", "m-tp1-r1-seed-baseline"]
    for rec in runs.values():
        assert rec["status"] == "ok", rec
        assert rec["bench"]["decode-c1"]["output_throughput"] == 100.0
        assert [len(x["output_ids"]) for x in rec["logprobs"]["prompts"]] == [8, 8, 8, 8]
        assert rec["weights"] == "dummy" and "--load-format dummy" in rec["commands"]["server"]
        assert rec["server_start_s"] >= 0 and "sglang.launch_server" in rec["commands"]["server"]
        assert (out / "runs" / f"{rec['id']}.json").exists()
        excerpt = json.loads((out / "runs" / rec["id"] / "excerpt.trace.json").read_text())["traceEvents"]
        assert [ev["ts"] for ev in excerpt] == [float(i) for i in range(4, 16)]  # 12 launches from the middle
    per_step = {v: r["profile"]["ranks"][0]["prepare_per_step"] for v, r in
                zip(("off", "on", "seed"), runs.values())}
    assert per_step == {"off": 1.0, "on": 1.0, "seed": float(LAYERS)}
    assert runs["m-tp1-r1-off"]["plugin"]["activation"] == {"disabled": 1}
    assert runs["m-tp1-r1-on-replace"]["plugin"]["summary"]["launches_avoided"] == 30
    started = servers(engine)
    assert [s["env"]["ATTN_SCHED_SGLANG_MODE"] for s in started] == [None, "replace", None]
    seed_env = started[2]["env"]
    assert seed_env["SGLANG_PLUGINS"] == "attn_sched,attn_sched_seed_baseline"
    assert seed_env["PYTHONPATH"].endswith(str(out / "seed-baseline-dist"))
    assert (out / "seed-baseline-dist" / "attn_sched_seed_baseline.py").exists()
    for s in started:
        assert not _alive(s["pid"]) and not _alive(s["child"])
    table = (out / "table.md").read_text()
    assert "| off | 1.00 (>= 10 steps) |" in table
    assert f"| seed-baseline | {LAYERS:.2f} (>= 10 steps) |" in table
    assert "| on-replace | 1 of 1 pairs identical |" in table
    assert not (out / "current.json").exists() and not (out / "runner.pid").exists()


def test_failed_runs_are_recorded_the_plan_goes_on_and_retries_on_request(tmp_path, engine, models_dir):
    out = tmp_path / "out"
    (engine / "fail-on").touch()
    args = plan_args("vllm", engine, models_dir, out, "--repeats", "2")
    done = serve_ab(*args)
    assert done.returncode == 1
    runs = state(out)["runs"]
    assert [r["status"] for r in runs.values()] == ["ok", "failed", "ok", "failed"]
    failed = runs["m-tp1-r1-on"]
    assert failed["error"] == "server exited with status 3 before it was healthy"
    assert failed["log_tail"] == ["no GPU"]
    assert "- m-tp1-r1-on: server exited with status 3" in (out / "table.md").read_text()

    (engine / "fail-on").unlink()
    (engine / "differ-on").touch()
    assert serve_ab(*args).returncode == 1  # failed runs stay failed unless asked
    assert len(servers(engine)) == 2
    assert serve_ab(*args, "--retry-failed").returncode == 0
    assert len(servers(engine)) == 4
    table = (out / "table.md").read_text()
    assert "| off (control) | 1 of 1 pairs identical |" in table
    assert ("| on | 0 of 4 pairs identical; worst m-tp1-r1-on vs m-tp1-r1-off: first at prompt 0 (16 tokens) "
            "output_ids[7], differing positions 12, max abs diff 0.126 |") in table
    assert "FAILURE: on: 4 of 4 pairs differ while the 1 off-vs-off pairs are identical" in table


def test_stop_on_error_and_a_failing_client(tmp_path, engine, models_dir):
    out = tmp_path / "out"
    (engine / "fail-client").touch()
    done = serve_ab(*plan_args("vllm", engine, models_dir, out, "--repeats", "2", "--stop-on-error"))
    assert done.returncode == 1 and "stopping: --stop-on-error" in done.stdout
    runs = state(out)["runs"]
    assert list(runs) == ["m-tp1-r1-off"]
    assert runs["m-tp1-r1-off"]["error"] == "benchmark decode-c1 exited with status 5: client crashed"
    assert all(not _alive(s["pid"]) and not _alive(s["child"]) for s in servers(engine))


def test_servers_that_never_start_one_after_another_stop_the_plan(tmp_path, engine, models_dir):
    """A broken setup (every server of the first device run died on a missing module) must not spend the
    device's time on every run of the plan; after the fix the plan resumes."""
    out = tmp_path / "out"
    (engine / "fail-off").touch()
    (engine / "fail-on").touch()
    args = plan_args("vllm", engine, models_dir, out, "--repeats", "3")
    done = serve_ab(*args)
    assert done.returncode == 1
    assert "stopping: 2 servers in a row never became healthy (last: no GPU)" in done.stdout
    assert list(state(out)["runs"]) == ["m-tp1-r1-off", "m-tp1-r1-on"]
    (engine / "fail-off").unlink()
    (engine / "fail-on").unlink()
    assert serve_ab(*args, "--retry-failed").returncode == 0
    assert [r["status"] for r in state(out)["runs"].values()] == ["ok"] * 6


def test_background_plan_killed_mid_run_resumes_where_it_stopped(tmp_path, engine, models_dir):
    out = tmp_path / "out"
    args = plan_args("sglang", engine, models_dir, out, "--variants", "off,on-replace", "--repeats", "2",
                     "--profile-seconds", "1.5")
    done = serve_ab(*args, "--background")
    assert done.returncode == 0 and "runner started in the background" in done.stdout, done.stderr
    assert serve_ab("run", *args[1:], "--background").returncode == 2  # one runner per plan
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # interrupt the second run inside its profile window
        current = json.loads((out / "current.json").read_text()) if (out / "current.json").exists() else {}
        if current.get("run") == "m-tp1-r1-on-replace" and current.get("phase") == "profile window":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the runner never reached the second run's profile window")
    status = serve_ab("status", "--out", str(out)).stdout
    assert "runner pid" in status and "m-tp1-r1-on-replace, profile window" in status
    os.kill(int((out / "runner.pid").read_text()), signal.SIGTERM)
    assert "no runner working on it" in serve_ab("status", "--out", str(out), "--wait", "30").stdout
    assert list(state(out)["runs"]) == ["m-tp1-r1-off"]  # the interrupted run left no record
    assert all(not _alive(s["pid"]) and not _alive(s["child"]) for s in servers(engine))
    assert "interrupted" in (out / "runner.log").read_text()

    done = serve_ab(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 of 4 runs to do" in done.stdout
    assert [s["env"]["ATTN_SCHED_DISABLE"] for s in servers(engine)] == ["1", "0", "0", "1", "0"]
    assert all(r["status"] == "ok" for r in state(out)["runs"].values()) and len(state(out)["runs"]) == 4


def test_status_works_while_a_foreground_runner_is_on_its_first_run(tmp_path, engine, models_dir):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "integration.serve_ab",
                             *plan_args("vllm", engine, models_dir, out, "--repeats", "1", "--profile-seconds", "2")],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out / "current.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        status = serve_ab("status", "--out", str(out))
        assert status.returncode == 0 and "2 runs: 0 ok, 0 failed, 2 to do" in status.stdout
        assert f"runner pid {proc.pid} working: m-tp1-r1-off" in status.stdout
    finally:
        assert proc.wait(timeout=120) == 0


def test_a_failed_start_is_named_by_the_log_tails_last_exception():
    """The tail of an SGLang 0.5.16 EAGLE3 server that died at graph capture (device run, machine 8a)."""
    tail = ["    from sglang.srt.layers.attention.dsa_backend import (",
            '  File "/tmp/engines/sglang-0.5.16/site/sglang/srt/layers/attention/dsa_backend.py", line 82, in <module>',
            "    import deep_gemm",
            "ModuleNotFoundError: No module named 'deep_gemm'",
            "",
            "[2026-12-03 12:54:51] Received sigquit from a child process. It usually means the child failed.",
            "[2026-12-03 12:54:51] kill_process_tree called: parent_pid=1457, include_parent=True, pid=1457"]
    assert _cause(tail) == "ModuleNotFoundError: No module named 'deep_gemm'"
    assert _cause(["no GPU"]) == "no GPU" and _cause([]) == "empty server log"


def test_a_plan_resumed_on_another_boot_warms_up_first(tmp_path, engine, models_dir):
    out = tmp_path / "out"
    args = plan_args("sglang", engine, models_dir, out, "--variants", "off,on-replace", "--repeats", "1",
                     "--warmup", "1")
    assert serve_ab(*args).returncode == 0
    recorded = state(out)
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert {rec["machine"] for rec in recorded["runs"].values()} == {boot}
    del recorded["runs"]["m-tp1-r1-on-replace"]  # as if the first machine was given back before it ran
    for rec in recorded["runs"].values():
        rec["machine"] = "a-machine-given-back"
    (out / "results.json").write_text(json.dumps(recorded))
    started = len(servers(engine))
    done = serve_ab(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(state(out)["runs"]) == ["m-tp1-w1-off", "m-tp1-r1-off", "m-tp1-w2-off", "m-tp1-r1-on-replace"]
    assert len(servers(engine)) == started + 2


def test_a_plan_is_not_continued_on_other_cards(tmp_path, engine, models_dir):
    """The device tool may serve an H100 for an H200: a resumed plan's servers must share one kind of card."""
    out = tmp_path / "out"
    args = plan_args("sglang", engine, models_dir, out, "--variants", "off,on-replace", "--repeats", "2")
    assert serve_ab(*args).returncode == 0
    recorded = state(out)
    for run_id in ("m-tp1-r2-off", "m-tp1-r2-on-replace"):
        del recorded["runs"][run_id]
    for rec in recorded["runs"].values():
        rec["cards"] = ["NVIDIA H200"]
    (out / "results.json").write_text(json.dumps(recorded))
    started = len(servers(engine))
    done = serve_ab(*args)
    assert done.returncode == 2 and len(servers(engine)) == started
    assert done.stderr.startswith("serve_ab: error: this plan's servers ran on NVIDIA H200, this machine has ")
    assert list(state(out)["runs"]) == ["m-tp1-r1-off", "m-tp1-r1-on-replace"]
