"""Executing a plan: one run = one fresh server through its phases; every record written at once.

Phases of a run: server start (until /health), logprobs of the fixed prompts (also warms the
server), the benchmark client per workload, the profile window, server stop (the whole process
group, always); then what the server log says about its compile cache, backend and graphs. A failure
in any phase ends that run as "failed" with the error and the server log's tail; the plan goes on
unless ``stop_on_error``, or until servers one after another never become healthy: then the setup
fails, not a server, and every further start would only spend GPU time. An interrupted run leaves no
record, so it is run again on resume.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from . import (commands, environment, logprobs, pluginlog, profiling, seed_baseline, server, serverlog, trace,
               variants)
from .errors import RunError
from .plan import Plan, Run
from .results import STATE, TABLE, State, read_bench_result, write_json
from .table import report

CURRENT = "current.json"
LOG_TAIL = 40
STARTS_FAILED_IN_A_ROW = 2  # servers that never became healthy, one after another: the setup is broken
EXCEPTION_LINE = re.compile(r"\s*[\w.]*(Error|Exception)\b")


def model_dir(models_dir: Path, setup: str) -> Path:
    """The served model's folder: a setup ``MODEL+VARIANT`` (e.g. ``+eagle3``, a draft model named in its
    serve flags) serves ``MODEL``."""
    return models_dir / setup.partition("+")[0]


@dataclass
class Settings:
    out: Path
    models_dir: Path
    env_sh: Path | None
    port: int
    server_timeout: float
    bench_timeout: float
    stop_on_error: bool
    retry_failed: bool


@dataclass
class Context:
    """What one invocation learns once: the engine environment, versions, cards, machine, model depths."""

    env: dict[str, str]
    versions: dict
    cards: list[str]
    machine: str
    seed_dist: Path | None
    layers: dict[str, int]

    @classmethod
    def prepare(cls, plan: Plan, s: Settings) -> "Context":
        """Everything checked, nothing written: bad input surfaces before a plan starts."""
        env = environment.capture(s.env_sh)
        variants.allowed_plugins(plan.engine, env)
        layers = {m: environment.model_layers(model_dir(s.models_dir, m)) for m in plan.models}
        seed_dist = s.out / "seed-baseline-dist" if "seed-baseline" in plan.variants else None
        return cls({**env, "PYTHONUNBUFFERED": "1"}, environment.versions(env), environment.cards(),
                   environment.machine(), seed_dist, layers)


class _Interrupted(KeyboardInterrupt):
    """SIGTERM / SIGHUP: unwind so the server is stopped; the run stays unrecorded."""


def _interrupt(signum, frame):
    raise _Interrupted(signal.Signals(signum).name)


def _phase(out: Path, run: Run, name: str) -> None:
    write_json(out / CURRENT, {"run": run.id, "phase": name, "since": time.time()})
    print(f"[serve_ab] {run.id}: {name}", flush=True)


def _client(argv: list[str], env: dict[str, str], log: Path, timeout: float, what: str) -> None:
    with open(log, "wb") as sink:
        try:
            done = subprocess.run(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RunError(f"{what}: no result after {timeout:.0f} s (killed); see {log}") from exc
    if done.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise RunError(f"{what} exited with status {done.returncode}: {tail}")


def _profile(plan: Plan, run: Run, s: Settings, ctx: Context, model_path: Path, trace_dir: Path) -> dict:
    window = profiling.record(plan.engine, s.port, str(model_path), trace_dir, plan.profile_seconds,
                              plan.profile_tokens)
    layers = ctx.layers[run.model]
    ranks = []
    for i, f in enumerate(window["files"]):
        evs = trace.events(f)  # read once: tens of MB, on the GPU machine's clock
        counts = trace.count_events(evs, f.name)
        ranks.append({**counts, **trace.per_step(counts, layers)})
        if i == 0:  # beside traces/, so it comes back with the plan; test data, never a reason to fail a run
            try:
                trace.excerpt(evs, trace_dir.parent / trace.EXCERPT_FILE)
            except (OSError, TypeError, ValueError) as exc:
                print(f"[serve_ab] {run.id}: no trace excerpt ({exc})", flush=True)
    return {"layers": layers, "seconds": plan.profile_seconds, "requests": profiling.REQUESTS,
            "request_ended_inside": window["request_ended_inside"], "ranks": ranks}


def execute(plan: Plan, run: Run, s: Settings, ctx: Context) -> dict:
    """One run, start to stop; its record (status "ok" or "failed")."""
    run_dir = s.out / "runs" / run.id
    shutil.rmtree(run_dir, ignore_errors=True)  # what an interrupted attempt left
    run_dir.mkdir(parents=True)
    model_path = model_dir(s.models_dir, run.model)
    trace_dir = run_dir / "traces"
    own_env = variants.environment(plan.engine, run.variant, ctx.env, ctx.seed_dist, plan.server_env)
    argv = commands.server_argv(plan.engine, model_path, plan.tp, s.port, plan.server_flags[run.model], trace_dir)
    rec = {"id": run.id, "model": run.model, "tp": plan.tp, "variant": run.variant, "repeat": run.repeat,
           "status": "failed", "error": None, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "versions": ctx.versions, "cards": ctx.cards, "machine": ctx.machine,
           "engine_env": str(s.env_sh or "this environment"), "env": own_env,
           "commands": {"server": commands.shell(own_env, argv), "bench": {}}, "server_start_s": None,
           "weights": "seeded" if commands.has_weights(model_path) else "dummy",
           "logprobs": None, "bench": {}, "profile": None, "plugin": None, "server": None}
    log = run_dir / "server.log"
    t0 = time.monotonic()
    proc = None
    try:
        _phase(s.out, run, "server start")
        proc = server.start(argv, {**ctx.env, **own_env}, log, s.port)
        rec["server_start_s"] = round(server.wait_healthy(s.port, proc, s.server_timeout), 1)
        _phase(s.out, run, "logprobs")
        rec["logprobs"] = logprobs.collect(plan.engine, s.port, str(model_path), plan.logprob_tokens)
        for w in plan.workloads:
            _phase(s.out, run, f"bench {w.name}")
            result = commands.result_file(plan.engine, run_dir, w)
            bench = commands.bench_argv(plan.engine, model_path, s.port, w, result)
            rec["commands"]["bench"][w.name] = commands.shell({}, bench)
            _client(bench, ctx.env, run_dir / f"bench-{w.name}.log", s.bench_timeout, f"benchmark {w.name}")
            rec["bench"][w.name] = read_bench_result(plan.engine, result)
        _phase(s.out, run, "profile window")
        rec["profile"] = _profile(plan, run, s, ctx, model_path, trace_dir)
        rec["status"] = "ok"
    except RunError as exc:
        rec["error"] = str(exc)
    except Exception as exc:  # a runner bug must not take the rest of the plan with it
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["traceback"] = traceback.format_exc().splitlines()[-12:]
    finally:
        if proc is not None:
            _phase(s.out, run, "server stop")
            server.stop(proc)
        text = log.read_text(errors="replace") if log.exists() else ""
        lines = pluginlog.extract(text)
        rec["plugin"] = {"lines": lines, **pluginlog.digest(lines)}
        rec["server"] = serverlog.extract(text)
        if rec["status"] != "ok":
            rec["log_tail"] = text.splitlines()[-LOG_TAIL:]
        rec["wall_s"] = round(time.monotonic() - t0, 1)
    return rec


def save(out: Path, state: State, rec: dict) -> None:
    """The run's own record, then the combined state and the table: all a resumed plan and a report need."""
    write_json(out / "runs" / f"{rec['id']}.json", rec)
    state.runs[rec["id"]] = rec
    state.save(out)
    (out / (TABLE + ".tmp")).write_text(report(state), encoding="utf-8")
    (out / (TABLE + ".tmp")).replace(out / TABLE)


def run_plan(state: State, s: Settings, ctx: Context) -> int:
    """Every pending run in order; 0 when the whole plan is ok, 1 otherwise."""
    plan = state.plan
    todo = state.pending(s.retry_failed, ctx.machine)
    if ctx.seed_dist is not None:
        seed_baseline.write_dist(ctx.seed_dist)
    print(f"[serve_ab] {len(todo)} of {len(plan.runs())} runs to do; state in {s.out / STATE}; "
          f"{plan.engine} {ctx.versions.get(plan.engine)} on {', '.join(ctx.cards)}", flush=True)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    failed_starts = 0
    try:
        for i, run in enumerate(todo, 1):
            rec = execute(plan, run, s, ctx)
            save(s.out, state, rec)
            print(f"[serve_ab] {i}/{len(todo)} {run.id}: {rec['status']} in {rec['wall_s']:.0f} s"
                  + (f": {rec['error']}" if rec["error"] else ""), flush=True)
            if rec["status"] != "ok" and s.stop_on_error:
                print("[serve_ab] stopping: --stop-on-error", flush=True)
                break
            failed_starts = failed_starts + 1 if rec["server_start_s"] is None else 0
            if failed_starts == STARTS_FAILED_IN_A_ROW:
                print(f"[serve_ab] stopping: {failed_starts} servers in a row never became healthy (last: "
                      f"{_cause(rec.get('log_tail', []))}); fix the setup, then resume with --retry-failed", flush=True)
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        (s.out / CURRENT).unlink(missing_ok=True)
    runs = plan.runs()
    return 0 if all(state.runs.get(r.id, {}).get("status") == "ok" for r in runs) else 1


def _cause(tail: list[str]) -> str:
    """The server log's last exception line (``ModuleNotFoundError: ...``), else its last line."""
    for line in reversed(tail):
        if EXCEPTION_LINE.match(line):
            return line.strip()
    return tail[-1].strip() if tail else "empty server log"


def load_current(out: Path) -> dict | None:
    try:
        return json.loads((out / CURRENT).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
