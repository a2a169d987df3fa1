"""``python3 -m integration.serve_ab run --dry-run`` and bad input, run as a user runs it."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from integration.serve_ab import results

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "integration.serve_ab", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)


def dry_run(*args: str) -> list[str]:
    done = run("run", *args, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.splitlines()


def commands(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line) for line in lines if not line.startswith("#")]


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _env(argv: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in argv[:argv.index("python3")])


def test_vllm_plan_alternates_variants_on_fresh_servers(tmp_path):
    lines = dry_run("--engine", "vllm", "--models", "gemma-3-like,qwen3-32b-tp4-rank", "--variants", "off,on",
                    "--repeats", "3", "--workloads", "decode-c1,prefill-c8", "--out", str(tmp_path / "o"))
    argvs = commands(lines)
    servers = [a for a in argvs if "serve" in a and "bench" not in a]
    assert len(servers) == 2 * 3 * 2 and len(argvs) == len(servers) * 3  # server + 2 clients per run
    assert [_env(a)["ATTN_SCHED_DISABLE"] for a in servers] == ["1", "0"] * 6
    models = ["/tmp/models/gemma-3-like"] * 6 + ["/tmp/models/qwen3-32b-tp4-rank"] * 6
    assert [_value(a, "serve") for a in servers] == models
    for a in servers:
        assert a[a.index("python3"):][:4] == ["python3", "-m", "vllm.entrypoints.cli.main", "serve"]
        assert _env(a)["ATTN_SCHED_SUMMARY_INTERVAL"] == "5"
        assert (_value(a, "--load-format"), _value(a, "--host"), _value(a, "--port")) == ("dummy", "127.0.0.1", "8000")
    run_ids = [line.split()[-1] for line in lines if line.startswith("# run ")]
    assert run_ids[:4] == ["gemma-3-like-tp1-r1-off", "gemma-3-like-tp1-r1-on", "gemma-3-like-tp1-r2-off",
                           "gemma-3-like-tp1-r2-on"]
    traces = {json.loads(_value(a, "--profiler-config"))["torch_profiler_dir"] for a in servers}
    assert len(traces) == 12  # each run profiles into its own dir


def test_warmup_servers_come_first_per_model_and_the_dry_run_ends_with_an_estimate(tmp_path):
    lines = dry_run("--engine", "vllm", "--models", "gemma-3-1b-like,gemma-3-like", "--variants", "off,on",
                    "--repeats", "2", "--warmup", "1", "--workloads", "decode-c4", "--override",
                    "decode-c4:output=128,prompts=8", "--profile-seconds", "2", "--out", str(tmp_path / "o"))
    run_ids = [line.split()[-1] for line in lines if line.startswith("# run ")]
    assert run_ids == ["gemma-3-1b-like-tp1-w1-off", "gemma-3-1b-like-tp1-r1-off", "gemma-3-1b-like-tp1-r1-on",
                       "gemma-3-1b-like-tp1-r2-off", "gemma-3-1b-like-tp1-r2-on", "gemma-3-like-tp1-w1-off",
                       "gemma-3-like-tp1-r1-off", "gemma-3-like-tp1-r1-on", "gemma-3-like-tp1-r2-off",
                       "gemma-3-like-tp1-r2-on"]
    # 10 servers: 50 s start + 5 stop + 8 + 2 profile + 4 logprob prompts + 8 client + 2 waves x 128 x 10 ms;
    # plus 100 s more for each model's cold start
    per_server = 50 + 5 + 8 + 2 + 4 + 8 + 8 / 4 * 128 * 0.01
    assert lines[-1] == f"# expected wall time: about {(10 * per_server + 2 * 100) / 60:.1f} min (10 servers)"
    assert any(line.startswith("# logprobs: prompts of 16, 300, 1000, 2500 tokens x 24 new") for line in lines)


def test_a_resumed_plan_dry_runs_what_run_would_do_a_new_machine_s_warm_up_first_and_cold(tmp_path, plan_from):
    """The listing and the estimate come from ``State.pending``: the rest of the plan, led on this machine (not the
    one that ran the first runs) by one more warm-up, a cold start like a fresh plan's first server."""
    def args(out, repeats):
        return ("--engine", "vllm", "--models", "m", "--variants", "off,on", "--warmup", "1", "--workloads",
                "decode-c4", "--repeats", repeats, "--out", str(tmp_path / out))
    plan, s = plan_from(*args("o", "2"))
    s.out.mkdir()
    results.State(plan, {run.id: {"id": run.id, "model": run.model, "repeat": run.repeat, "status": "ok",
                                  "server_start_s": 60.0, "machine": "a-machine-given-back"}
                         for run in plan.runs()[:3]}).save(s.out)  # w1, r1-off, r1-on
    resumed = dry_run(*args("o", "2"))
    assert [line.split()[-1] for line in resumed if line.startswith("# run ")] == ["m-tp1-w2-off", "m-tp1-r2-off",
                                                                                   "m-tp1-r2-on"]
    assert resumed[-1] == dry_run(*args("fresh", "1"))[-1]  # w1, r1-off, r1-on: as many servers, one cold


def test_sglang_variants_differ_only_in_their_environment(tmp_path):
    out = tmp_path / "o"
    lines = dry_run("--engine", "sglang", "--models", "qwen3-32b-tp4-rank", "--repeats", "1", "--out", str(out))
    servers = [a for a in commands(lines) if "sglang.launch_server" in a]
    by_variant = dict(zip(["off", "on-replace", "on-keep-native", "seed-baseline"], servers))
    assert _env(by_variant["off"]) == {"ATTN_SCHED_SUMMARY_INTERVAL": "5", "ATTN_SCHED_DISABLE": "1",
                                       "SGLANG_PLUGINS": "attn_sched"}
    assert _env(by_variant["on-replace"])["ATTN_SCHED_SGLANG_MODE"] == "replace"
    assert _env(by_variant["on-keep-native"])["ATTN_SCHED_SGLANG_MODE"] == "keep-native"
    seed = _env(by_variant["seed-baseline"])
    assert seed["ATTN_SCHED_DISABLE"] == "1"
    assert seed["SGLANG_PLUGINS"] == "attn_sched,attn_sched_seed_baseline"
    assert seed["PYTHONPATH"].split(":")[-1] == str(out / "seed-baseline-dist")
    stripped = {tuple(a[a.index("python3"):]) for a in servers}
    assert len(stripped) == 1  # same command line for every variant


def test_server_env_reaches_every_server_of_every_variant_and_the_variants_still_differ(tmp_path):
    lines = dry_run("--engine", "vllm", "--models", "m", "--repeats", "2", "--warmup", "1", "--server-env",
                    "TORCHINDUCTOR_DETERMINISTIC=1", "--server-env", "A_B=x=y", "--out", str(tmp_path / "o"))
    servers = [_env(a) for a in commands(lines) if "serve" in a and "bench" not in a]
    assert len(servers) == 5
    assert all(e["TORCHINDUCTOR_DETERMINISTIC"] == "1" and e["A_B"] == "x=y" for e in servers)
    assert [e["ATTN_SCHED_DISABLE"] for e in servers] == ["1", "1", "0", "1", "0"]


def test_same_prompts_for_every_variant(tmp_path):
    lines = dry_run("--engine", "sglang", "--models", "m", "--repeats", "2", "--variants", "off,seed-baseline",
                    "--out", str(tmp_path / "o"))
    clients = [a for a in commands(lines) if "sglang.bench_serving" in a]
    assert len(clients) == 2 * 2 * 5
    first = [[x for x in a if "/runs/" not in x] for a in clients[:5]]
    for i in range(0, len(clients), 5):
        assert [[x for x in a if "/runs/" not in x] for a in clients[i:i + 5]] == first
    assert [_value(a, "--seed") for a in clients[:5]] == ["101", "102", "103", "104", "105"]


def test_scale_and_overrides_shorten_and_say_so(tmp_path):
    lines = dry_run("--engine", "sglang", "--models", "m", "--variants", "off", "--repeats", "1",
                    "--scale", "0.1", "--override", "decode-c1:output=50,prompts=2", "--out", str(tmp_path / "o"))
    clients = {a[a.index("--seed") + 1]: a for a in commands(lines) if "sglang.bench_serving" in a}
    shape = {seed: (_value(a, "--random-input-len"), _value(a, "--random-output-len"), _value(a, "--num-prompts"),
                    _value(a, "--max-concurrency")) for seed, a in clients.items()}
    assert shape == {"101": ("500", "50", "2", "1"), "102": ("500", "800", "4", "4"), "103": ("500", "800", "16", "16"),
                     "104": ("2000", "200", "8", "8"), "105": ("8000", "50", "8", "8")}


def test_serve_flags_file_then_extra_args(tmp_path):
    flags = tmp_path / "serve_flags.json"
    flags.write_text(json.dumps({"vllm": {"m": ["--max-model-len", "20000", "--attention-backend", "FLASH_ATTN"]},
                                 "sglang": {"m": ["--other"]}}))
    lines = dry_run("--engine", "vllm", "--models", "m,m2", "--variants", "off", "--repeats", "1", "--serve-flags",
                    str(flags), "--extra-server-args=--enforce-eager", "--out", str(tmp_path / "o"))
    servers = [a for a in commands(lines) if "serve" in a and "bench" not in a]
    assert servers[0][-5:] == ["--max-model-len", "20000", "--attention-backend", "FLASH_ATTN", "--enforce-eager"]
    assert servers[1][-1] == "--enforce-eager" and "--max-model-len" not in servers[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "tgi"], "invalid choice: 'tgi' (choose from 'sglang', 'vllm')"),
        (["--engine", "vllm"], "the following arguments are required: --models, --out"),
        (["--engine", "vllm", "--variants", "off,on-replace"], "'on-replace' not a vllm variant; accepted: a comma "
                                                                "list of off, on"),
        (["--engine", "sglang", "--variants", "on-replace"], "--variants must include 'off'"),
        (["--engine", "vllm", "--repeats", "0"], "--repeats must be >= 1 (got 0)"),
        (["--engine", "vllm", "--tp", "x"], "argument --tp: invalid int value: 'x'"),
        (["--engine", "vllm", "--port", "70000"], "--port must be in 1..65535"),
        (["--engine", "vllm", "--workloads", "decode-c2"],
         "unknown 'decode-c2'; accepted: all or a comma list of decode-c1, decode-c4, decode-c16"),
        (["--engine", "vllm", "--scale", "0"], "--scale must be a number > 0"),
        (["--engine", "vllm", "--override", "decode-c1:output=x"], "cannot read 'output=x'; accepted: "
                                                                   "NAME:output=N,prompts=M"),
        (["--engine", "vllm", "--override", "decode:output=5"], "unknown workload 'decode'"),
        (["--engine", "vllm", "--workloads", "decode-c1", "--override", "prefill-c8:output=5"],
         "prefill-c8 is not among --workloads"),
        (["--engine", "vllm", "--models", "/tmp/models/m"], "accepted: a comma list of dir names under --models-dir"),
        (["--engine", "sglang", "--extra-server-args", "--tp-size 2 --x"],
         "--extra-server-args must not set --tp-size"),
        (["--engine", "vllm", "--extra-server-args=--load-format=auto"], "must not set --load-format"),
        (["--engine", "sglang", "--extra-server-args", "--chat-template 'a"], "--extra-server-args: cannot split"),
        (["--engine", "vllm", "--extra-server-args", "--max-model-len 8192"],
         "--max-model-len 8192 (server flags of m) is shorter than the plan's longest request, 8500 tokens "
         "(workload prefill-c8); accepted: --max-model-len >= 8500"),
        (["--engine", "sglang", "--workloads", "decode-c1", "--scale", "0.1",
          "--extra-server-args=--context-length=2000"],
         "2524 tokens (logprob prompts)"),
        (["--engine", "vllm", "--server-env", "ATTN_SCHED_DISABLE=0"], "--server-env 'ATTN_SCHED_DISABLE=0': "
                                                                     "accepted: NAME=VALUE with NAME an environment"),
        (["--engine", "sglang", "--server-env", "SGLANG_PLUGINS=x"],
         "other than ATTN_SCHED_*, SGLANG_PLUGINS and PYTHONPATH"),
        (["--engine", "vllm", "--server-env", "TORCHINDUCTOR_DETERMINISTIC"], "accepted: NAME=VALUE"),
        (["--engine", "vllm", "--server-env", "1X=1"], "accepted: NAME=VALUE"),
        (["--engine", "sglang", "--server-env", "PYTHONPATH=/x"], "--server-env 'PYTHONPATH=/x': accepted"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    if "--models" not in args and args != ["--engine", "vllm"]:
        args = [*args, "--models", "m"]
    if args != ["--engine", "vllm"]:
        args = [*args, "--out", str(tmp_path / "o")]
    done = run("run", *args, "--dry-run")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("serve_ab: error: ") and message in lines[0], lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read it as JSON"),
    (json.dumps({"vllm": ["--x"]}), "the 'vllm' entry is not an object"),
    (json.dumps({"vllm": {"m": "--x 1"}}), "vllm.m is not a list of strings"),
    (json.dumps({"vllm": {"m": ["--port", "1"]}}), "must not set --port"),
])
def test_bad_serve_flags_file_is_named(tmp_path, content, message):
    flags = tmp_path / "flags.json"
    flags.write_text(content)
    done = run("run", "--engine", "vllm", "--models", "m", "--serve-flags", str(flags), "--out", str(tmp_path / "o"),
               "--dry-run")
    assert done.returncode == 2 and message in done.stderr and str(flags) in done.stderr


def test_allow_list_without_the_plugin_is_refused_before_starting(tmp_path, models_dir):
    done = run("run", "--engine", "vllm", "--models", "m", "--models-dir", str(models_dir), "--out",
               str(tmp_path / "o"), env={"PATH": "/usr/bin:/bin", "VLLM_PLUGINS": "other_plugin"})
    assert done.returncode == 2
    assert "VLLM_PLUGINS='other_plugin' excludes attn_sched" in done.stderr
    assert not (tmp_path / "o").exists()  # nothing was started or written


def test_missing_model_dir_is_refused_before_starting(tmp_path, models_dir):
    done = run("run", "--engine", "sglang", "--models", "m,absent", "--models-dir", str(models_dir), "--out",
               str(tmp_path / "o"))
    assert done.returncode == 2 and f"{models_dir / 'absent'}: no readable config.json" in done.stderr
    assert not (tmp_path / "o").exists()


def test_env_sh_is_sourced_and_a_broken_one_refused(tmp_path):
    from integration.serve_ab import environment

    good = tmp_path / "env.sh"
    good.write_text("export ENGINE_SITE=/tmp/engines/x\nexport PYTHONPATH=/tmp/engines/x/site\n")
    env = environment.capture(good)
    assert env["ENGINE_SITE"] == "/tmp/engines/x" and env["PYTHONPATH"] == "/tmp/engines/x/site"
    bad = tmp_path / "bad.sh"
    bad.write_text("echo broken >&2; return 3\n")
    done = run("run", "--engine", "vllm", "--models", "m", "--env", str(bad), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "sourcing it failed with status 3 (broken)" in done.stderr


def test_a_draft_setup_serves_and_benchmarks_its_target_model(tmp_path):
    """``MODEL+eagle3`` serves MODEL with the draft named in its flags; the dry run prints what the runner runs."""
    argvs = commands(dry_run("--engine", "sglang", "--models", "qwen3-32b-tp4-rank+eagle3", "--variants", "off",
                             "--repeats", "1", "--workloads", "decode-c4", "--out", str(tmp_path / "o")))
    server, bench = argvs
    assert _value(server, "--model-path") == _value(bench, "--model") == "/tmp/models/qwen3-32b-tp4-rank"
    assert _value(server, "--speculative-draft-model-path") == "/tmp/models/qwen3-32b-tp4-rank-eagle3"
