"""Command line: ``run`` (start or continue a plan, optionally in the background), ``status``, ``report``.

Bad input ends with one line naming what is wrong and what is accepted, exit status 2, before
anything starts. ``run`` exits 0 when every run of the plan is ok, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import commands, environment, logprobs, plan as plans, profiling, variants, workloads
from .errors import UsageError
from .results import STATE, State, resume
from .runner import Context, Settings, load_current, model_dir, run_plan
from .table import report

ROOT = Path(__file__).resolve().parents[2]
SERVE_FLAGS = ROOT / "integration" / "models" / "serve_flags.json"
DEFAULT_PORT = {"sglang": 30000, "vllm": 8000}
PIDFILE = "runner.pid"
RUNNER_LOG = "runner.log"
PROG = "python3 -m integration.serve_ab"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="start a plan, or continue it (same options, same --out)")
    r.add_argument("--engine", required=True, choices=("sglang", "vllm"))
    r.add_argument("--env", type=Path, help="engine environment to source first, e.g. /tmp/engines/vllm-0.26.0/env.sh "
                                            "(default: this environment)")
    r.add_argument("--models", required=True, help="comma list of model dir names under --models-dir")
    r.add_argument("--models-dir", type=Path, default=Path("/tmp/models"), help="default /tmp/models")
    r.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    r.add_argument("--variants", help="comma list (default: all of the engine's); sglang: "
                   f"{', '.join(variants.DESCRIPTIONS['sglang'])}; vllm: {', '.join(variants.DESCRIPTIONS['vllm'])}")
    r.add_argument("--repeats", type=int, default=plans.HEADLINE_RUNS,
                   help=f"fresh servers per variant and model (default {plans.HEADLINE_RUNS}; fewer = exploratory)")
    r.add_argument("--workloads", default="all", help=f"all or a comma list of {', '.join(workloads.SEED_PR)}")
    r.add_argument("--scale", type=float, default=1.0,
                   help="output lengths and prompt counts times this (default 1 = the seed PR's)")
    r.add_argument("--override", action="append", default=[], metavar="NAME:output=N,prompts=M",
                   help="per-workload output length / prompt count, after --scale (repeatable)")
    r.add_argument("--serve-flags", type=Path, default=SERVE_FLAGS,
                   help="per-model server flags, engine -> model -> args, used if present (default "
                        "integration/models/serve_flags.json)")
    r.add_argument("--extra-server-args", default="", help='one string added after the per-model flags, '
                                                           'e.g. "--disable-cuda-graph"')
    r.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of every server of every variant, e.g. TORCHINDUCTOR_DETERMINISTIC=1 "
                        "(repeatable; part of the plan)")
    r.add_argument("--logprob-tokens", type=int, default=24,
                   help="new tokens per fixed logprob prompt (default 24)")
    r.add_argument("--warmup", type=int, default=0,
                   help="cold-compile servers per model first (not compared, not in the statistics; default 0)")
    r.add_argument("--profile-seconds", type=float, default=0.5, help="profiler window (default 0.5)")
    r.add_argument("--profile-tokens", type=int, default=2048,
                   help="max new tokens of the profile window's requests (default 2048; they are dropped after it)")
    r.add_argument("--out", type=Path, required=True, help="results dir; holds the plan's state")
    r.add_argument("--port", type=int, help="server port on 127.0.0.1 (default 30000 sglang, 8000 vllm)")
    r.add_argument("--server-timeout", type=float, default=900.0, help="seconds to wait for /health (default 900)")
    r.add_argument("--bench-timeout", type=float, default=900.0, help="seconds per benchmark client (default 900)")
    r.add_argument("--stop-on-error", action="store_true", help="stop the plan at the first failed run")
    r.add_argument("--retry-failed", action="store_true", help="run recorded failed runs again")
    r.add_argument("--background", action="store_true",
                   help=f"detach (setsid); progress in OUT/{RUNNER_LOG}, see the status command")
    r.add_argument("--dry-run", action="store_true", help="print every command, one per line, and exit")
    st = sub.add_parser("status", help="progress of a plan")
    st.add_argument("--out", type=Path, required=True)
    st.add_argument("--wait", type=float, default=0.0,
                    help="block until the plan's runner ends or this many seconds pass, then report")
    rp = sub.add_parser("report", help=f"print the tables from a results dir (or its {STATE})")
    rp.add_argument("--out", type=Path, required=True)
    return p


def _positive(name: str, value, minimum=1):
    if not value >= minimum:
        raise UsageError(f"{name} must be >= {minimum} (got {value})")
    return value


def make_plan(a: argparse.Namespace) -> plans.Plan:
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if not models or any("/" in m for m in models):
        raise UsageError(f"--models {a.models!r}: accepted: a comma list of dir names under --models-dir "
                         "(e.g. qwen3-32b-tp4-rank,gemma-3-like)")
    chosen = variants.check(a.engine, [v.strip() for v in a.variants.split(",")] if a.variants
                            else list(variants.DESCRIPTIONS[a.engine]))
    try:
        extra = shlex.split(a.extra_server_args)
    except ValueError as exc:
        raise UsageError(f"--extra-server-args: cannot split {a.extra_server_args!r} ({exc}); "
                         "accepted: one shell-quoted string of server flags") from exc
    commands.check_flags(a.engine, extra, "--extra-server-args")
    flags = plans.model_flags(a.serve_flags, a.engine, models)
    for model, f in flags.items():
        commands.check_flags(a.engine, f, f"{a.serve_flags} ({a.engine}.{model})")
    plan = plans.Plan(
        engine=a.engine, models=list(dict.fromkeys(models)), tp=_positive("--tp", a.tp), variants=chosen,
        repeats=_positive("--repeats", a.repeats), workloads=workloads.select(a.workloads, a.scale, a.override),
        server_flags={m: f + extra for m, f in flags.items()},
        server_env=variants.check_server_env(a.engine, a.server_env),
        logprob_tokens=_positive("--logprob-tokens", a.logprob_tokens),
        warmup=_positive("--warmup", a.warmup, 0),
        profile_seconds=_positive("--profile-seconds", a.profile_seconds, 0.05),
        profile_tokens=_positive("--profile-tokens", a.profile_tokens, 16))
    longest = max((w.longest_request(), f"workload {w.name}") for w in plan.workloads)
    longest = max(longest, (max(logprobs.PROMPT_LENGTHS) + plan.logprob_tokens, "logprob prompts"),
                  (profiling.PROMPT_LEN + plan.profile_tokens, "profile window"))
    plans.check_context(plan, *longest)
    return plan


def make_settings(a: argparse.Namespace) -> Settings:
    port = DEFAULT_PORT[a.engine] if a.port is None else a.port
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be in 1..65535 (got {port})")
    return Settings(out=a.out, models_dir=a.models_dir, env_sh=a.env, port=port,
                    server_timeout=_positive("--server-timeout", a.server_timeout),
                    bench_timeout=_positive("--bench-timeout", a.bench_timeout),
                    stop_on_error=a.stop_on_error, retry_failed=a.retry_failed)


def dry_run(state: State, s: Settings) -> str:
    """The runs a ``run`` here would do (``State.pending``: a resumed plan's rest, a new machine's warm-ups
    included), each with its commands, and the expected wall time of them."""
    plan = state.plan
    inherited = dict(os.environ) if s.env_sh is None else {}
    seed_dist = s.out / "seed-baseline-dist"
    lines = [] if s.env_sh is None else [f"# every command runs after: source {s.env_sh}"]
    runs = state.pending(s.retry_failed, environment.machine())
    for i, run in enumerate(runs, 1):
        run_dir = s.out / "runs" / run.id
        model = model_dir(s.models_dir, run.model)
        env = variants.environment(plan.engine, run.variant, inherited, seed_dist, plan.server_env)
        lines += [f"# run {i}/{len(runs)} {run.id}",
                  commands.shell(env, commands.server_argv(plan.engine, model, plan.tp, s.port,
                                                           plan.server_flags[run.model], run_dir / "traces")),
                  f"# logprobs: prompts of {', '.join(map(str, logprobs.PROMPT_LENGTHS))} tokens x "
                  f"{plan.logprob_tokens} new, top {logprobs.TOP} (prompt top {logprobs.PROMPT_TOP}), one at a time"]
        for w in plan.workloads:
            result = commands.result_file(plan.engine, run_dir, w)
            lines.append(commands.shell({}, commands.bench_argv(plan.engine, model, s.port, w, result)))
        lines.append(f"# profile: {profiling.REQUESTS} streaming requests, POST /start_profile, "
                     f"{plan.profile_seconds} s, POST /stop_profile; then the server is stopped")
    lines.append(f"# expected wall time: about {estimate_s(plan, runs) / 60:.1f} min ({len(runs)} servers)")
    return "\n".join(lines)


# Rough per-server costs on an H200 (s): a warm start, a cold first start (compile), each client's
# start-up, the profile window's start/stop and trace write, the stop.
START_WARM_S, START_COLD_S, CLIENT_S, PROFILE_S, STOP_S = 50.0, 150.0, 8.0, 8.0, 5.0


def estimate_s(plan: plans.Plan, runs: list[plans.Run]) -> float:
    """What --dry-run promises for ``runs``: per server a warm start, clients, profile, logprobs and stop; each
    model's first server among them counts as cold (on a new machine, its extra warm-up; resumed on the same
    machine, this errs long)."""
    per_server = START_WARM_S + STOP_S + PROFILE_S + plan.profile_seconds + len(logprobs.PROMPT_LENGTHS)
    per_server += sum(CLIENT_S + w.num_prompts / w.concurrency * w.output_len * 0.01 for w in plan.workloads)
    return len(runs) * per_server + len({run.model for run in runs}) * (START_COLD_S - START_WARM_S)


def _runner_pid(out: Path) -> int | None:
    """The pid of a live runner working on ``out`` (a stale pid file names no such process)."""
    try:
        pid = int((out / PIDFILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"integration.serve_ab" in cmdline else None


def _lock(out: Path) -> None:
    pid = _runner_pid(out)
    if pid is not None and pid != os.getpid():
        raise UsageError(f"{out}: a runner (pid {pid}) is working on this plan; accepted: "
                         f"`{PROG} status --out {out} --wait N`, or another --out")


def _background(argv: list[str], out: Path) -> int:
    child = [sys.executable, "-m", "integration.serve_ab", *[a for a in argv if a != "--background"]]
    with open(out / RUNNER_LOG, "ab") as log:
        proc = subprocess.Popen(child, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (out / PIDFILE).write_text(str(proc.pid))
    print(f"runner started in the background (pid {proc.pid}); log {out / RUNNER_LOG}; "
          f"progress: {PROG} status --out {out} [--wait SECONDS]")
    return 0


def cmd_run(a: argparse.Namespace, argv: list[str]) -> int:
    plan, s = make_plan(a), make_settings(a)
    if a.dry_run:
        print(dry_run(resume(s.out, plan), s))
        return 0
    _lock(s.out)
    state = resume(s.out, plan)
    ctx = Context.prepare(plan, s)  # bad environment or model dirs: said here, before anything starts
    state.check_cards(ctx.cards)
    s.out.mkdir(parents=True, exist_ok=True)
    state.save(s.out)  # status works from the first second on
    if a.background:
        return _background(argv, s.out)
    (s.out / PIDFILE).write_text(str(os.getpid()))
    try:
        return run_plan(state, s, ctx)
    finally:
        if _runner_pid(s.out) == os.getpid():
            (s.out / PIDFILE).unlink()


def status_text(out: Path) -> str:
    state = State.load(out)
    runs = state.plan.runs()
    recs = [state.runs[r.id] for r in runs if r.id in state.runs]
    ok = sum(r["status"] == "ok" for r in recs)
    pending = len(runs) - len(recs)
    lines = [f"{out}: {state.plan.engine} TP{state.plan.tp}, {len(runs)} runs: {ok} ok, {len(recs) - ok} failed, "
             f"{pending} to do"]
    pid, current = _runner_pid(out), load_current(out)
    if pid is None:
        lines.append("no runner working on it" + (f"; continue with the same `{PROG} run ...`" if pending else ""))
    else:
        where = (f": {current['run']}, {current['phase']} for {time.time() - current['since']:.0f} s"
                 if current else "")
        lines.append(f"runner pid {pid} working{where}")
        if recs and pending:
            mean = sum(r["wall_s"] for r in recs) / len(recs)
            lines.append(f"about {mean * pending / 60:.0f} min left at {mean:.0f} s per run")
    lines += [f"failed: {r['id']}: {r['error']}" for r in recs if r["status"] != "ok"]
    return "\n".join(lines)


def cmd_status(a: argparse.Namespace) -> int:
    deadline = time.monotonic() + a.wait
    State.load(a.out)  # a clear error before waiting on nothing
    while time.monotonic() < deadline and _runner_pid(a.out) is not None:
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    print(status_text(a.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = build_parser().parse_args(argv)
        if a.command == "run":
            return cmd_run(a, argv)
        if a.command == "status":
            return cmd_status(a)
        print(report(State.load(a.out)), end="")
        return 0
    except UsageError as exc:
        print(f"serve_ab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("serve_ab: interrupted; the current run is not recorded and runs again on resume", file=sys.stderr)
        return 130
