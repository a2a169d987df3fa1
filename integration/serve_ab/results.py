"""The results directory: the engines' benchmark files read, and the plan's state kept in one file.

``results.json`` holds the plan and every finished run's record; it is rewritten (atomically) after
each run, and is all that ``report`` and a resumed plan need. Per-run records, server logs, client
outputs and traces stay beside it under ``runs/``.
"""

from __future__ import annotations

import json
import lzma
import os
from pathlib import Path

from .errors import RunError, UsageError
from .plan import Plan

STATE = "results.json"
TABLE = "table.md"
FORMAT = 1

# (result key, row label); the same keys in SGLang's jsonl and vLLM's json.
METRICS = (
    ("output_throughput", "Output throughput (tok/s)"),
    ("mean_tpot_ms", "Mean TPOT (ms)"),
    ("mean_itl_ms", "Mean ITL (ms)"),
    ("mean_ttft_ms", "Mean TTFT (ms)"),
)


def read_bench_result(engine: str, path: Path) -> dict[str, float]:
    """The four table metrics from one client result file.

    SGLang appends one JSON object per run to its ``--output-file`` (the last line is ours);
    vLLM writes one JSON object with ``--save-result``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunError(f"{path}: cannot read the benchmark result ({exc.strerror})") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise RunError(f"{path}: empty; the benchmark client wrote no result")
    try:
        record = json.loads(lines[-1] if engine == "sglang" else text)
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not {'JSON lines' if engine == 'sglang' else 'JSON'} ({exc})") from exc
    if not isinstance(record, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(record).__name__}")
    if not record.get("completed"):
        raise RunError(f"{path}: no request completed (completed={record.get('completed')!r})")
    out = {}
    for key, _ in METRICS:
        value = record.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RunError(f"{path}: field {key!r} missing or not a number (got {value!r})")
        out[key] = float(value)
    return out


def write_json(path: Path, data) -> None:
    """Write-then-rename, so a reader (or a kill) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class State:
    """The plan and the records of its finished runs (ok or failed), by run id."""

    def __init__(self, plan: Plan, runs: dict[str, dict] | None = None):
        self.plan = plan
        self.runs = runs or {}

    def to_json(self) -> dict:
        return {"format": FORMAT, "plan": self.plan.to_json(), "runs": self.runs}

    @classmethod
    def load(cls, path: Path) -> "State":
        if path.is_dir():
            # committed plans with logprobs are stored xz-compressed: a 1B model's 11 SGLang servers are 58 MB
            # of JSON, 6.6 MB gzipped, 0.5 MB in xz (the servers repeat each other), and every call to the GPU
            # machine carries the working tree beside an engine part
            path = path / STATE if (path / STATE).exists() or not (path / f"{STATE}.xz").exists() else path / f"{STATE}.xz"
        try:
            raw = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
            data = json.loads(raw.decode("utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            return cls(Plan.from_json(data["plan"]), data["runs"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}: not a results file of this runner ({exc}); accepted: a results dir "
                             f"or its {STATE}") from exc

    def pending(self, retry_failed: bool, machine: str) -> list:
        """Runs still to do, in plan order: never recorded, or failed when retrying. A model none of whose
        servers became healthy on ``machine`` (a plan resumed after the earlier machine was given back)
        gets one more warm-up first, so the cold compile there lands in no measured server."""
        todo = [run for run in self.plan.runs()
                if run.id not in self.runs or (retry_failed and self.runs[run.id]["status"] != "ok")]
        if not self.plan.warmup:
            return todo
        warm = {rec["model"] for rec in self.runs.values()
                if rec.get("machine") == machine and rec.get("server_start_s") is not None}
        out = []
        for run in todo:
            if run.model not in warm and run.repeat > 0:
                done = sum(rec["model"] == run.model and rec["repeat"] == 0 for rec in self.runs.values())
                out.append(self.plan.warmup_run(run.model, max(done, self.plan.warmup) + 1))
            warm.add(run.model)
            out.append(run)
        return out

    def check_cards(self, cards: list[str]) -> None:
        """Refuse to go on with a plan on other cards than its servers ran on: its deltas and intervals pool
        every server, and an H100's timings are not an H200's (the device tool serves either)."""
        ran = {tuple(rec["cards"]) for rec in self.runs.values() if rec.get("cards")} - {tuple(cards)}
        if ran:
            raise UsageError(f"this plan's servers ran on {' / '.join(', '.join(c) for c in sorted(ran))}, this "
                             f"machine has {', '.join(cards)}; accepted: the same cards to continue it, or a new "
                             "--out for a new plan")

    def save(self, out: Path) -> None:
        write_json(out / STATE, self.to_json())


def resume(out: Path, plan: Plan) -> State:
    """The state in ``out`` for ``plan``: a fresh one, or the earlier one if it is the same plan. More
    ``--repeats`` grow it by whole groups of fresh servers after the recorded ones (how an interval
    narrows); fewer would orphan recorded servers, so they are refused like any other difference."""
    if not (out / STATE).exists():
        return State(plan)
    state = State.load(out)
    diff = state.plan.differences(plan)
    if diff == ["repeats"] and plan.repeats > state.plan.repeats:
        return State(plan, state.runs)
    if diff:
        raise UsageError(f"{out} holds a different plan (differs in {', '.join(diff)}); accepted: the same "
                         f"options to continue it (more --repeats than its {state.plan.repeats} add servers), "
                         "or a new --out for a new plan")
    return state
