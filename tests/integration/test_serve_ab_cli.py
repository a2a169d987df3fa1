"""--dry-run output and bad-input handling of integration/serve_ab.py, run as a user runs it."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "integration" / "serve_ab.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def dry_run_lines(*args: str) -> list[list[str]]:
    done = run(*args, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [shlex.split(line) for line in done.stdout.splitlines()]


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_sglang_dry_run_plan():
    lines = dry_run_lines("--engine", "sglang", "--model", "Qwen/Qwen3-32B", "--tp", "4", "--gsm8k",
                          "--extra-server-args", "--attention-backend fa3 --mem-fraction-static 0.85")
    # 3 runs x (off, on) x (server + 5 workloads + gsm8k)
    assert len(lines) == 3 * 2 * 7
    servers = [argv for argv in lines if "sglang.launch_server" in argv]
    assert [argv[0] for argv in servers] == ["ATTN_SCHED_DISABLE=1", "ATTN_SCHED_DISABLE=0"] * 3
    for argv in servers:
        assert argv[1:4] == [sys.executable, "-m", "sglang.launch_server"]
        assert _value(argv, "--model-path") == "Qwen/Qwen3-32B" and _value(argv, "--tp-size") == "4"
        assert _value(argv, "--host") == "127.0.0.1" and _value(argv, "--port") == "30000"
        assert argv[-4:] == ["--attention-backend", "fa3", "--mem-fraction-static", "0.85"]
    benches = [argv for argv in lines if "sglang.bench_serving" in argv]
    assert len(benches) == 30
    shapes = {(_value(a, "--random-input-len"), _value(a, "--random-output-len"), _value(a, "--max-concurrency"))
              for a in benches}
    assert shapes == {("500", "8000", "1"), ("500", "8000", "4"), ("500", "8000", "16"),
                      ("2000", "2000", "8"), ("8000", "500", "8")}
    for argv in benches:
        assert _value(argv, "--dataset-name") == "random-ids"
        assert _value(argv, "--random-range-ratio") == "1.0"
        assert _value(argv, "--host") == "127.0.0.1"
    outputs = [_value(a, "--output-file") for a in benches]
    assert len(set(outputs)) == 30 and all(o.endswith(".jsonl") for o in outputs)
    assert sum("few_shot_gsm8k" in " ".join(a) for a in lines) == 6


def test_vllm_dry_run_plan():
    lines = dry_run_lines("--engine", "vllm", "--model", "m", "--runs", "2", "--workloads", "decode-c16",
                          "--port", "8123", "--num-prompts", "10")
    assert [argv[:3] for argv in lines] == [
        ["ATTN_SCHED_DISABLE=1", "vllm", "serve"], ["vllm", "bench", "serve"],
        ["ATTN_SCHED_DISABLE=0", "vllm", "serve"], ["vllm", "bench", "serve"],
    ] * 2
    bench = lines[1]
    assert _value(bench, "--dataset-name") == "random"
    assert _value(bench, "--random-range-ratio") == "0.0"  # vLLM's fixed-length setting, see serve_ab.py
    assert _value(bench, "--num-prompts") == "10" and _value(bench, "--max-concurrency") == "16"
    assert _value(bench, "--port") == "8123" and "--save-result" in bench and "--ignore-eos" in bench
    assert _value(bench, "--result-filename") == "vllm-off-run1-decode-c16.json"


def test_same_prompts_off_and_on():
    """Only the server's environment differs between the modes: the client commands match."""
    lines = [" ".join(a) for a in dry_run_lines("--engine", "sglang", "--model", "m", "--runs", "1")]
    off, on = lines[1:6], lines[7:12]
    assert [line.replace("-off-", "-on-") for line in off] == on


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "tgi", "--model", "m"], "invalid choice: 'tgi' (choose from 'sglang', 'vllm')"),
        (["--engine", "vllm"], "the following arguments are required: --model"),
        (["--engine", "vllm", "--model", "m", "--runs", "0"], "--runs must be a whole number >= 1 (got 0)"),
        (["--engine", "vllm", "--model", "m", "--tp", "x"], "argument --tp: invalid int value: 'x'"),
        (["--engine", "vllm", "--model", "m", "--port", "70000"], "--port must be in 1..65535"),
        (["--engine", "vllm", "--model", "m", "--workloads", "decode-c2"],
         "unknown 'decode-c2'; accepted: all or a comma list of decode-c1, decode-c4, decode-c16"),
        (["--engine", "vllm", "--model", "m", "--gsm8k"], "--gsm8k is SGLang-only"),
        (["--engine", "sglang", "--model", "m", "--extra-server-args", "--tp-size 2 --x"],
         "--extra-server-args must not set --tp-size"),
        (["--engine", "sglang", "--model", "m", "--extra-server-args", "--chat-template 'a"],
         "--extra-server-args: cannot split"),
    ],
)
def test_bad_input_is_one_clear_line(args, message):
    done = run(*args, "--dry-run")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("serve_ab.py: error: ") and message in lines[0]


def test_allow_list_without_the_plugin_is_refused_before_starting(tmp_path):
    env_run = subprocess.run(
        [sys.executable, str(SCRIPT), "--engine", "vllm", "--model", "m", "--result-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "VLLM_PLUGINS": "other_plugin"},
    )
    assert env_run.returncode == 2
    assert "VLLM_PLUGINS='other_plugin' excludes attn_sched" in env_run.stderr
    assert not any(tmp_path.iterdir())  # nothing was started or written
