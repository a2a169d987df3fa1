"""The exact server and benchmark-client command lines, per engine.

Servers get ``--load-format dummy`` (no weights travel) unless the model folder holds seeded
weights (``make_models.py --weights``: safetensors, the engine's default loader), and, for vLLM, the torch profiler config the
profile window needs; the flags in ``OWN_FLAGS`` are the runner's alone. ``python3`` is the engine
environment's interpreter (``env.sh`` puts it first on PATH).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from .errors import UsageError
from .workloads import Workload

HOST = "127.0.0.1"
PYTHON = "python3"
VLLM_CLI = [PYTHON, "-m", "vllm.entrypoints.cli.main"]
# Flags the runner sets itself; passing them again would make runs differ silently.
OWN_FLAGS = {
    "sglang": ("--model-path", "--model", "--tp-size", "--tensor-parallel-size", "--tp", "--host", "--port",
               "--load-format"),
    "vllm": ("--model", "--tensor-parallel-size", "-tp", "--host", "--port", "--load-format", "--profiler-config"),
}


def check_flags(engine: str, flags: list[str], where: str) -> None:
    clash = sorted({a.split("=")[0] for a in flags} & set(OWN_FLAGS[engine]))
    if clash:
        raise UsageError(f"{where} must not set {', '.join(clash)}; the runner sets the model (--models), the TP "
                         "size (--tp), the port (--port), host 127.0.0.1 and --load-format dummy itself")


def vllm_profiler_config(trace_dir: Path) -> str:
    """Torch profiler on, lean: no stacks, no frontend trace, no printed summary table."""
    return json.dumps({"profiler": "torch", "torch_profiler_dir": str(trace_dir.resolve()),
                       "torch_profiler_with_stack": False, "torch_profiler_dump_cuda_time_total": False,
                       "ignore_frontend": True})


def has_weights(model_path: Path) -> bool:
    """Seeded weights written into the model folder: then the engine loads them instead of dummy ones."""
    return any(model_path.glob("*.safetensors"))


def server_argv(engine: str, model_path: Path, tp: int, port: int, flags: list[str], trace_dir: Path) -> list[str]:
    where = ["--host", HOST, "--port", str(port)] + ([] if has_weights(model_path) else ["--load-format", "dummy"])
    if engine == "sglang":
        return [PYTHON, "-m", "sglang.launch_server", "--model-path", str(model_path), "--tp-size", str(tp),
                *where, *flags]
    return [*VLLM_CLI, "serve", str(model_path), "--tensor-parallel-size", str(tp), *where,
            "--profiler-config", vllm_profiler_config(trace_dir), *flags]


def bench_argv(engine: str, model_path: Path, port: int, w: Workload, result: Path) -> list[str]:
    common = ["--host", HOST, "--port", str(port), "--model", str(model_path)]
    shape = ["--random-input-len", str(w.input_len), "--random-output-len", str(w.output_len)]
    load = ["--num-prompts", str(w.num_prompts), "--max-concurrency", str(w.concurrency), "--seed", str(w.seed)]
    if engine == "sglang":
        # sglang: lengths drawn from [len * ratio, len], so 1.0 fixes them; ignore_eos and
        # temperature 0 are the client's defaults for --backend sglang.
        return [PYTHON, "-m", "sglang.bench_serving", "--backend", "sglang", *common,
                "--dataset-name", "random-ids", *shape, "--random-range-ratio", "1.0", *load,
                "--output-file", str(result)]
    # vllm: lengths drawn from [len * (1 - ratio), len * (1 + ratio)] and the ratio must be
    # in [0, 1), so 0.0 fixes them (1.0 is rejected when sampling); --ignore-eos and
    # --temperature 0 match what sglang's client sends.
    return [*VLLM_CLI, "bench", "serve", "--backend", "vllm", *common, "--dataset-name", "random", *shape,
            "--random-range-ratio", "0.0", "--ignore-eos", "--temperature", "0", *load,
            "--save-result", "--result-dir", str(result.parent), "--result-filename", result.name]


def result_file(engine: str, run_dir: Path, w: Workload) -> Path:
    """Where the client writes its result: SGLang appends JSON lines, vLLM writes one JSON object."""
    return run_dir / f"bench-{w.name}{'.jsonl' if engine == 'sglang' else '.json'}"


def shell(env: dict[str, str], argv: list[str]) -> str:
    """One shell line, environment first: what the report and --dry-run show."""
    return shlex.join([f"{k}={v}" for k, v in env.items()] + argv)
