#!/usr/bin/env python3
"""Serving A/B of attn-sched-plugin with the engine's own benchmark client.

Starts the engine on localhost with the plugin off (``ATTN_SCHED_DISABLE=1``) and on
(``ATTN_SCHED_DISABLE=0``), a fresh server for every run and mode, runs the workloads of
SGLang PR #20943 against it with ``python -m sglang.bench_serving`` or ``vllm bench serve``,
optionally GSM8K (SGLang only), and prints one table: the median of the runs per workload
and metric, and the change plugin-on vs off. Needs a GPU server; ``--dry-run`` prints the
commands instead. Only 127.0.0.1 is ever contacted by this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
MODES = ("off", "on")
MODE_ENV = {"off": {"ATTN_SCHED_DISABLE": "1"}, "on": {"ATTN_SCHED_DISABLE": "0"}}
DEFAULT_PORT = {"sglang": 30000, "vllm": 8000}
PLUGIN_ALLOW_LIST = {"sglang": "SGLANG_PLUGINS", "vllm": "VLLM_PLUGINS"}
# Flags the harness sets itself; passing them again would make the two modes differ silently.
OWN_SERVER_FLAGS = {
    "sglang": ("--model-path", "--model", "--tp-size", "--tensor-parallel-size", "--tp", "--host", "--port"),
    "vllm": ("--model", "--tensor-parallel-size", "-tp", "--host", "--port"),
}


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str
    input_len: int
    output_len: int
    concurrency: int
    seed: int  # distinct per workload so no workload hits another's prefix cache

    @property
    def label(self) -> str:
        return f"BS={self.concurrency} {self.kind} (input={_tokens(self.input_len)}, output={_tokens(self.output_len)})"


# SGLang PR #20943 / #21104: Qwen3-32B TP4 on 4xH200, 3 runs, fresh server each.
WORKLOADS = {
    w.name: w
    for w in (
        Workload("decode-c1", "Decode-heavy", 500, 8000, 1, 101),
        Workload("decode-c4", "Decode-heavy", 500, 8000, 4, 102),
        Workload("decode-c16", "Decode-heavy", 500, 8000, 16, 103),
        Workload("balanced-c8", "Balanced", 2000, 2000, 8, 104),
        Workload("prefill-c8", "Prefill-heavy", 8000, 500, 8, 105),
    )
}
GSM8K = "gsm8k"

# (result key, row label); the same keys in SGLang's jsonl and vLLM's json.
METRICS = (
    ("output_throughput", "Output throughput (tok/s)"),
    ("mean_tpot_ms", "Mean TPOT (ms)"),
    ("mean_itl_ms", "Mean ITL (ms)"),
    ("mean_ttft_ms", "Mean TTFT (ms)"),
)
ACCURACY = ("accuracy", "GSM8K accuracy")


def _tokens(n: int) -> str:
    return f"{n // 1000}K" if n >= 1000 and n % 1000 == 0 else str(n)


class UsageError(Exception):
    """Bad input: the message names what is wrong and what is accepted."""


class ResultError(Exception):
    """A result file is missing or is not what the engine's client writes."""


@dataclass
class Options:
    engine: str
    model: str
    tp: int
    port: int
    runs: int
    workloads: list[Workload]
    num_prompts: int | None
    gsm8k: bool
    gsm8k_data_path: str | None
    extra_server_args: list[str]
    result_dir: Path
    server_timeout: float


@dataclass
class Step:
    kind: str  # "server" | "bench" | GSM8K
    mode: str
    run: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workload: Workload | None = None
    result: Path | None = None

    def shell(self) -> str:
        """The step as one shell line, environment first."""
        return shlex.join([f"{k}={v}" for k, v in self.env.items()] + self.argv)


# ---- command construction -------------------------------------------------------------

def server_argv(o: Options) -> list[str]:
    if o.engine == "sglang":
        base = [sys.executable, "-m", "sglang.launch_server", "--model-path", o.model, "--tp-size", str(o.tp)]
    else:
        base = ["vllm", "serve", o.model, "--tensor-parallel-size", str(o.tp)]
    return base + ["--host", HOST, "--port", str(o.port)] + o.extra_server_args


def num_prompts(o: Options, w: Workload) -> int:
    return o.num_prompts if o.num_prompts is not None else 4 * w.concurrency


def bench_argv(o: Options, w: Workload, result: Path) -> list[str]:
    common = ["--host", HOST, "--port", str(o.port), "--model", o.model]
    shape = ["--random-input-len", str(w.input_len), "--random-output-len", str(w.output_len)]
    load = ["--num-prompts", str(num_prompts(o, w)), "--max-concurrency", str(w.concurrency), "--seed", str(w.seed)]
    if o.engine == "sglang":
        # sglang: lengths drawn from [len * ratio, len], so 1.0 fixes them; ignore_eos and
        # temperature 0 are the client's defaults for --backend sglang.
        return [sys.executable, "-m", "sglang.bench_serving", "--backend", "sglang", *common,
                "--dataset-name", "random-ids", *shape, "--random-range-ratio", "1.0", *load,
                "--output-file", str(result)]
    # vllm: lengths drawn from [len * (1 - ratio), len * (1 + ratio)] and the ratio must be
    # in [0, 1), so 0.0 fixes them (1.0 is rejected when sampling); --ignore-eos and
    # --temperature 0 match what sglang's client sends.
    return ["vllm", "bench", "serve", "--backend", "vllm", *common, "--dataset-name", "random", *shape,
            "--random-range-ratio", "0.0", "--ignore-eos", "--temperature", "0", *load,
            "--save-result", "--result-dir", str(result.parent), "--result-filename", result.name]


def gsm8k_argv(o: Options) -> list[str]:
    argv = [sys.executable, "-m", "sglang.test.few_shot_gsm8k", "--host", HOST, "--port", str(o.port)]
    return argv + (["--data-path", o.gsm8k_data_path] if o.gsm8k_data_path else [])


def result_path(o: Options, mode: str, run: int, name: str) -> Path:
    suffix = ".txt" if name == GSM8K else (".jsonl" if o.engine == "sglang" else ".json")
    return o.result_dir / f"{o.engine}-{mode}-run{run}-{name}{suffix}"


def plan(o: Options) -> list[Step]:
    """Every command, in order: per run, plugin off then on, a fresh server each."""
    steps: list[Step] = []
    for run in range(1, o.runs + 1):
        for mode in MODES:
            steps.append(Step("server", mode, run, server_argv(o), dict(MODE_ENV[mode])))
            for w in o.workloads:
                res = result_path(o, mode, run, w.name)
                steps.append(Step("bench", mode, run, bench_argv(o, w, res), workload=w, result=res))
            if o.gsm8k:
                steps.append(Step(GSM8K, mode, run, gsm8k_argv(o), result=result_path(o, mode, run, GSM8K)))
    return steps


# ---- result files -----------------------------------------------------------------------

def read_bench_result(engine: str, path: Path) -> dict[str, float]:
    """The four table metrics from one client result file.

    SGLang appends one JSON object per run to its ``--output-file`` (the last line is ours);
    vLLM writes one JSON object with ``--save-result``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultError(f"{path}: cannot read the benchmark result ({exc.strerror})") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ResultError(f"{path}: empty; the benchmark client wrote no result")
    try:
        record = json.loads(lines[-1] if engine == "sglang" else text)
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path}: not {'JSON lines' if engine == 'sglang' else 'JSON'} ({exc})") from exc
    if not isinstance(record, dict):
        raise ResultError(f"{path}: expected a JSON object, got {type(record).__name__}")
    if not record.get("completed"):
        raise ResultError(f"{path}: no request completed (completed={record.get('completed')!r})")
    out = {}
    for key, _ in METRICS:
        value = record.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ResultError(f"{path}: field {key!r} missing or not a number (got {value!r})")
        out[key] = float(value)
    return out


_ACCURACY = re.compile(r"^Accuracy:\s*([0-9.]+)\s*$", re.MULTILINE)


def read_gsm8k_result(path: Path) -> dict[str, float]:
    """The accuracy line that ``sglang.test.few_shot_gsm8k`` prints (its stdout is saved here)."""
    try:
        found = _ACCURACY.findall(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultError(f"{path}: cannot read the GSM8K output ({exc.strerror})") from exc
    if not found:
        raise ResultError(f"{path}: no 'Accuracy: <number>' line in the GSM8K output")
    return {ACCURACY[0]: float(found[-1])}


def collect(o: Options) -> dict[tuple[str, str], list[dict[str, float]]]:
    """(mode, workload or gsm8k) -> one metrics dict per run, read from the result files."""
    names = [w.name for w in o.workloads] + ([GSM8K] if o.gsm8k else [])
    out: dict[tuple[str, str], list[dict[str, float]]] = {}
    for mode in MODES:
        for name in names:
            out[(mode, name)] = [
                read_gsm8k_result(p) if name == GSM8K else read_bench_result(o.engine, p)
                for p in (result_path(o, mode, run, name) for run in range(1, o.runs + 1))
            ]
    return out


# ---- the table --------------------------------------------------------------------------

def _delta(off: float, on: float) -> str:
    if off == 0:
        return "n/a"
    return f"{(on - off) / off * 100:+.1f}%"


def format_table(results: dict[tuple[str, str], list[dict[str, float]]], workloads: list[Workload], runs: int) -> str:
    """One markdown table in the layout of SGLang PR #20943: baseline, plugin, delta per metric."""
    rows = [
        f"| Workload | Metric | Plugin off (median of {runs}) | Plugin on (median of {runs}) | Delta |",
        "|---|---|---:|---:|---:|",
    ]
    sections = [(w.name, w.label, METRICS) for w in workloads]
    if any(name == GSM8K for _, name in results):
        sections.append((GSM8K, "GSM8K (few-shot, SGLang)", (ACCURACY,)))
    for name, label, metrics in sections:
        for key, metric in metrics:
            off = statistics.median(r[key] for r in results[("off", name)])
            on = statistics.median(r[key] for r in results[("on", name)])
            digits = 3 if key == ACCURACY[0] else 2
            rows.append(f"| {label} | {metric} | {off:.{digits}f} | {on:.{digits}f} | {_delta(off, on)} |")
    return "\n".join(rows)


# ---- running ----------------------------------------------------------------------------

def _env(step: Step) -> dict[str, str]:
    env = dict(os.environ)
    env.update(step.env)
    return env


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    url = f"http://{HOST}:{port}/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before it was healthy; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise RuntimeError(f"server not healthy at {url} after {timeout:.0f} s; see {log}")


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
    """Stop the server and every process it started (its own process group) and wait until all
    are gone, so the next server finds the GPUs and the port free."""
    for sig, timeout in ((signal.SIGTERM, 120.0), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _wait_group(proc, timeout):
            break
    proc.wait()


def execute(o: Options, steps: list[Step]) -> None:
    o.result_dir.mkdir(parents=True, exist_ok=True)
    server: subprocess.Popen | None = None
    try:
        for step in steps:
            print(f"[serve_ab] run {step.run} plugin {step.mode}: {step.shell()}", flush=True)
            if step.kind == "server":
                if server is not None:
                    stop(server)
                log = o.result_dir / f"{o.engine}-{step.mode}-run{step.run}-server.log"
                with open(log, "wb") as sink:
                    server = subprocess.Popen(step.argv, env=_env(step), stdout=sink, stderr=subprocess.STDOUT,
                                              start_new_session=True)
                wait_healthy(o.port, server, o.server_timeout, log)
                continue
            assert step.result is not None
            step.result.unlink(missing_ok=True)  # sglang appends; a stale line must not be read
            if step.kind == GSM8K:
                out = subprocess.run(step.argv, env=_env(step), check=False, capture_output=True, text=True)
                step.result.write_text(out.stdout + out.stderr, encoding="utf-8")
                if out.returncode != 0:
                    raise RuntimeError(f"GSM8K exited with status {out.returncode}; see {step.result}")
            else:
                subprocess.run(step.argv, env=_env(step), check=True)
    finally:
        if server is not None:
            stop(server)


# ---- command line -----------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="serve_ab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", required=True, choices=("sglang", "vllm"))
    p.add_argument("--model", required=True, help="model path or name, as the server takes it")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--port", type=int, help="server port on 127.0.0.1 (default 30000 sglang, 8000 vllm)")
    p.add_argument("--runs", type=int, default=3, help="fresh-server runs per mode (default 3)")
    p.add_argument("--workloads", default="all", help=f"comma list of {', '.join(WORKLOADS)} (default all)")
    p.add_argument("--num-prompts", type=int, help="prompts per workload (default 4 x its concurrency)")
    p.add_argument("--gsm8k", action="store_true", help="also run sglang.test.few_shot_gsm8k (SGLang only)")
    p.add_argument("--gsm8k-data-path", help="local GSM8K test.jsonl (otherwise the SGLang script downloads it)")
    p.add_argument("--extra-server-args", default="", help='one string, e.g. "--attention-backend fa3"')
    p.add_argument("--result-dir", default="serve_ab_results", help="where result files go (default ./serve_ab_results)")
    p.add_argument("--server-timeout", type=float, default=1800.0, help="seconds to wait for /health (default 1800)")
    p.add_argument("--dry-run", action="store_true", help="print every command, one per line, and exit")
    p.add_argument("--report-only", action="store_true", help="print the table from existing result files")
    return p


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise UsageError(f"{name} must be a whole number >= 1 (got {value})")
    return value


def options(args: argparse.Namespace) -> Options:
    names = list(WORKLOADS) if args.workloads.strip() == "all" else [n.strip() for n in args.workloads.split(",")]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        raise UsageError(f"--workloads: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                         f"accepted: all or a comma list of {', '.join(WORKLOADS)}")
    port = DEFAULT_PORT[args.engine] if args.port is None else args.port
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be in 1..65535 (got {port})")
    if args.gsm8k and args.engine != "sglang":
        raise UsageError("--gsm8k is SGLang-only (sglang.test.few_shot_gsm8k speaks SGLang's native API); "
                         "accepted with --engine sglang")
    try:
        extra = shlex.split(args.extra_server_args)
    except ValueError as exc:
        raise UsageError(f"--extra-server-args: cannot split {args.extra_server_args!r} ({exc}); "
                         "accepted: one shell-quoted string of server flags") from exc
    clash = sorted({a.split("=")[0] for a in extra} & set(OWN_SERVER_FLAGS[args.engine]))
    if clash:
        raise UsageError(f"--extra-server-args must not set {', '.join(clash)}; use the harness's own "
                         "--model / --tp / --port (the host is always 127.0.0.1)")
    return Options(
        engine=args.engine, model=args.model, tp=_positive("--tp", args.tp), port=port,
        runs=_positive("--runs", args.runs), workloads=[WORKLOADS[n] for n in dict.fromkeys(names)],
        num_prompts=None if args.num_prompts is None else _positive("--num-prompts", args.num_prompts),
        gsm8k=args.gsm8k, gsm8k_data_path=args.gsm8k_data_path, extra_server_args=extra,
        result_dir=Path(args.result_dir), server_timeout=args.server_timeout,
    )


def check_allow_list(engine: str) -> None:
    """The 'on' servers inherit this environment: an allow-list without us would make on == off."""
    var = PLUGIN_ALLOW_LIST[engine]
    allowed = os.environ.get(var)
    if allowed and "attn_sched" not in allowed.split(","):
        raise UsageError(f"{var}={allowed!r} excludes attn_sched, so 'plugin on' would be off; "
                         f"accepted: unset {var} or include attn_sched in it")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        o = options(args)
        steps = plan(o)
        if args.dry_run:
            print("\n".join(s.shell() for s in steps))
            return 0
        if not args.report_only:
            check_allow_list(o.engine)
            execute(o, steps)
        table = format_table(collect(o), o.workloads, o.runs)
    except UsageError as exc:
        print(f"serve_ab.py: error: {exc}", file=sys.stderr)
        return 2
    except (ResultError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"serve_ab.py: failed: {exc}", file=sys.stderr)
        return 1
    print(f"\n{o.engine} {o.model} TP{o.tp}, {o.runs} runs per mode, fresh server each; "
          "plugin off = ATTN_SCHED_DISABLE=1\n")
    print(table)
    (o.result_dir / "table.md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
