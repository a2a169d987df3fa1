"""A plan: what is measured (the part that must match to resume) and the list of runs in order.

Runs go model by model; within a model, first ``warmup`` servers of the first variant (repeat 0:
they compile the model cold and are neither compared nor in the statistics), then repeat by repeat,
every variant once (off, on, ..., off, on, ...), so variants alternate on fresh servers and a plan cut
short still has whole groups. A plan resumed on another machine warms each model up there again
(``State.pending``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from . import workloads as wl
from .errors import UsageError

HEADLINE_RUNS = 3  # fewer ok runs per variant makes a point exploratory
# server flags that set the longest request the server accepts, per engine
CONTEXT_FLAG = {"sglang": "--context-length", "vllm": "--max-model-len"}


@dataclass(frozen=True)
class Run:
    id: str
    model: str
    variant: str
    repeat: int


@dataclass
class Plan:
    engine: str
    models: list[str]
    tp: int
    variants: list[str]
    repeats: int
    workloads: list[wl.Workload]
    server_flags: dict[str, list[str]]  # model -> flags after the runner's own (serve_flags.json, then extra)
    profile_seconds: float
    profile_tokens: int
    logprob_tokens: int = 24
    warmup: int = 0  # cold-compile servers per model before the measured ones
    # environment of every server of every variant (an engine setting the whole plan runs under)
    server_env: dict[str, str] = dataclasses.field(default_factory=dict)

    def runs(self) -> list[Run]:
        out = []
        for model in self.models:
            out += [self.warmup_run(model, i) for i in range(1, self.warmup + 1)]
            out += [Run(f"{model}-tp{self.tp}-r{repeat}-{variant}", model, variant, repeat)
                    for repeat in range(1, self.repeats + 1) for variant in self.variants]
        return out

    def warmup_run(self, model: str, i: int) -> Run:
        """The i-th cold-compile server of ``model`` (repeat 0)."""
        return Run(f"{model}-tp{self.tp}-w{i}-{self.variants[0]}", model, self.variants[0], 0)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        """Also a plan of an earlier runner (``greedy_tokens``, no logprobs or warm-up): fields it lacks
        take their defaults, fields this runner no longer has are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known},
                      "workloads": [wl.Workload(**w) for w in data["workloads"]]})

    def differences(self, other: "Plan") -> list[str]:
        """Fields in which ``other`` differs from this plan."""
        mine, theirs = self.to_json(), other.to_json()
        return [key for key in mine if mine[key] != theirs[key]]


def model_flags(path: Path, engine: str, models: list[str]) -> dict[str, list[str]]:
    """Per-model server flags from ``serve_flags.json`` (engine -> model -> list of args), if present."""
    if not path.is_file():
        return {m: [] for m in models}
    accepted = 'accepted: {"sglang"|"vllm": {"<model>": ["--flag", "value", ...]}}'
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it as JSON ({exc}); {accepted}") from exc
    per_engine = data.get(engine, {}) if isinstance(data, dict) else None
    if not isinstance(per_engine, dict):
        raise UsageError(f"{path}: the {engine!r} entry is not an object; {accepted}")
    out = {}
    for model in models:
        flags = per_engine.get(model, [])
        if not (isinstance(flags, list) and all(isinstance(f, str) for f in flags)):
            raise UsageError(f"{path}: {engine}.{model} is not a list of strings; {accepted}")
        out[model] = flags
    return out


def flag_value(flags: list[str], flag: str) -> str | None:
    """The last value given to ``flag`` (``--flag v`` or ``--flag=v``), as argparse would keep it."""
    value = None
    for i, arg in enumerate(flags):
        if arg == flag and i + 1 < len(flags):
            value = flags[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def check_context(plan: Plan, longest: int, what: str) -> None:
    """A server that rejects the plan's longest request would waste a whole run: refuse up front."""
    flag = CONTEXT_FLAG[plan.engine]
    for model, flags in plan.server_flags.items():
        raw = flag_value(flags, flag)
        if raw is not None and raw.isdigit() and int(raw) < longest:
            raise UsageError(f"{flag} {raw} (server flags of {model}) is shorter than the plan's longest request, "
                             f"{longest} tokens ({what}); accepted: {flag} >= {longest}, or shorter workloads "
                             "(--scale, --override)")
