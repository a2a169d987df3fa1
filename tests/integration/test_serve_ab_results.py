"""Results: the engines' own result files, the state a plan resumes from, and the report's tables.

Sample files in data/ follow the real schemas: SGLang 0.5.23 ``sglang/benchmark/serving.py``
(one JSON line appended per run to ``--output-file``) and vLLM 0.33.0
``vllm/benchmarks/serve.py`` (one JSON object from ``--save-result``).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from integration.serve_ab import results, table
from integration.serve_ab.errors import RunError, UsageError

DATA = Path(__file__).with_name("data")
ROOT = Path(__file__).resolve().parents[2]


def test_sglang_jsonl_last_line_is_read():
    got = results.read_bench_result("sglang", DATA / "sglang-0.5.23-bench_serving.jsonl")
    assert got == {"output_throughput": 131.41, "mean_tpot_ms": 7.61, "mean_itl_ms": 7.6, "mean_ttft_ms": 45.2}


def test_vllm_json_is_read():
    got = results.read_bench_result("vllm", DATA / "vllm-0.33.0-bench_serve.json")
    assert got == {"output_throughput": 133.27, "mean_tpot_ms": 7.49, "mean_itl_ms": 7.49, "mean_ttft_ms": 41.7}


@pytest.mark.parametrize(
    "engine, text, message",
    [
        ("vllm", "", "empty"),
        ("vllm", "{not json", "not JSON"),
        ("sglang", "[1, 2]\n", "expected a JSON object"),
        ("vllm", json.dumps({"completed": 0, "output_throughput": 1.0}), "no request completed"),
        ("vllm", json.dumps({"completed": 3, "output_throughput": 1.0, "mean_tpot_ms": 1.0, "mean_itl_ms": 1.0}),
         "'mean_ttft_ms' missing"),
        ("sglang", json.dumps({"completed": 3, "output_throughput": "fast", "mean_tpot_ms": 1.0,
                               "mean_itl_ms": 1.0, "mean_ttft_ms": 1.0}), "'output_throughput' missing or not a number"),
    ],
)
def test_bad_result_file_names_the_problem(tmp_path, engine, text, message):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(RunError, match=message) as info:
        results.read_bench_result(engine, path)
    assert str(path) in str(info.value)


def test_missing_result_file():
    with pytest.raises(RunError, match="cannot read"):
        results.read_bench_result("sglang", Path("/nonexistent/absent.jsonl"))


# ---- the cells ----------------------------------------------------------------------------------

def test_value_and_delta_cells():
    off = [100.0, 101.0, 102.0, 103.0, 104.0]
    assert table.value_cell(off) == "102.00 (101.00-103.00)" and table.value_cell([5.0]) == "5.00"
    assert table.value_cell([]) == "-"
    faster = [x * 1.05 for x in off]
    assert table.delta_cell("output_throughput", off, faster).startswith("gain 5.0% (CI +")
    assert table.delta_cell("mean_tpot_ms", off, faster).startswith("slower 5.0% (CI +")
    assert table.delta_cell("mean_tpot_ms", off, [101.5, 100.5, 103.5, 102.5, 104.5]).startswith(
        "no difference within ±")
    assert table.delta_cell("mean_tpot_ms", off[:1], faster[:1]) == "+5.0% (n=1/1: too few servers for a 95% interval)"
    assert table.delta_cell("mean_tpot_ms", [], faster) == "-"


# ---- records, state, report ----------------------------------------------------------------------

def _bench(tput, tpot=7.0):
    return {"output_throughput": tput, "mean_tpot_ms": tpot, "mean_itl_ms": tpot, "mean_ttft_ms": 40.0}


def record(run, status="ok", tput=100.0, ids=None, per_step=1.0, avoided=None, activation=None, error=None):
    return {
        "id": run.id, "model": run.model, "tp": 1, "variant": run.variant, "repeat": run.repeat, "status": status,
        "error": error, "versions": {"sglang": "0.5.16"}, "cards": ["NVIDIA H200"], "server_start_s": 40.0,
        "wall_s": 90.0, "commands": {"server": "python3 -m sglang.launch_server --model-path m", "bench": {}},
        "logprobs": {"prompt_lengths": [2], "prompts": [{"output_ids": ids or [4, 5], "chosen": [-1.0, -2.0],
                                                         "output_top": [[[4, -1.0]], [[5, -2.0]]],
                                                         "prompt_chosen": [None, -3.0], "prompt_top": [None, [[7, -3.0]]]}]},
        "bench": {"decode-c1": _bench(tput)},
        "profile": {"ranks": [{"file": "t.json.gz", "prepare": 10, "fa3_main": 40, "steps": 10.0,
                               "prepare_per_step": per_step}]},
        "plugin": {"lines": [], "activation": activation or {"disabled": 2},
                   "summary": None if avoided is None else {"processes": 1, "launches_avoided": avoided,
                                                            "passthrough": {"sglang_outside_fa_backend": 2},
                                                            "replays": None}},
    }


@pytest.fixture
def sglang_plan(tmp_path, plan_from):
    plan, _ = plan_from("--engine", "sglang", "--models", "m", "--variants", "off,on-replace,seed-baseline",
                        "--workloads", "decode-c1", "--scale", "0.1", "--out", str(tmp_path / "o"))
    return plan


def test_report_tables(sglang_plan):
    runs = {r.id: r for r in sglang_plan.runs()}
    state = results.State(sglang_plan)
    tputs = {"off": [100.0, 101.0, 102.0], "on-replace": [105.0, 106.0, 107.0], "seed-baseline": [98.0, 99.0, 101.0]}
    for run in runs.values():
        v = run.variant
        state.runs[run.id] = record(
            run, tput=tputs[v][run.repeat - 1], per_step={"off": 1.0, "on-replace": 1.0, "seed-baseline": 4.0}[v],
            avoided=None if v != "on-replace" else 1000 + run.repeat,
            activation={"active": 1, "inactive": 1} if v == "on-replace" else {"disabled": 2},
            ids=[4, 9] if run.id == "m-tp1-r2-on-replace" else None)
    text = table.report(state)
    lines = text.splitlines()
    assert lines[0] == "# Serving A/B: sglang 0.5.16, TP1, on 1x NVIDIA H200"
    assert "9 of 9 runs ok, 0 failed, 0 not run" in text
    assert "Shortened from the seed PR's workloads (time limits on the GPU machine): decode-c1: output 8000 -> 800, " \
           "prompts 4 -> 1." in text
    assert ("| Workload | Metric | off (n=3) | on-replace (n=3) | delta on-replace | seed-baseline (n=3) "
            "| delta seed-baseline |") in lines
    assert ("| BS=1 Decode-heavy (input=500, output=800 of 8K) | Output throughput (tok/s) | 101.00 (100.50-101.50) "
            "| 106.00 (105.50-106.50) | +5.0% (n=3/3: too few servers for a 95% interval) | 99.00 (98.50-100.00) "
            "| -2.0% (n=3/3: too few servers for a 95% interval) |") in lines
    assert "| off (control) | 3 of 3 pairs identical |" in lines
    assert ("| on-replace | 6 of 9 pairs identical; worst m-tp1-r2-on-replace vs m-tp1-r1-off: first at prompt 0 "
            "(2 tokens) output_ids[1], differing positions 1, max abs diff 0 |") in lines
    assert any(line.startswith("FAILURE: on-replace: 3 of 9 pairs differ while the 3 off-vs-off pairs") for line in lines)
    assert "| seed-baseline | 9 of 9 pairs identical |" in lines
    assert "| off | 1.00 (>= 10 steps) | disabled x2 | - | - | - |" in lines
    assert ("| on-replace | 1.00 (>= 10 steps) | active x1, inactive x1 | 1001-1003 | sglang_outside_fa_backend=6 "
            "| - |") in lines
    assert "| seed-baseline | 4.00 (>= 10 steps) | disabled x2 | - | - | - |" in lines


def test_report_marks_exploratory_and_failed_runs(sglang_plan):
    state = results.State(sglang_plan)
    first = sglang_plan.runs()[:3]  # repeat 1 of each variant
    state.runs[first[0].id] = record(first[0], tput=100.0)
    state.runs[first[1].id] = record(first[1], tput=110.0)
    state.runs[first[2].id] = record(first[2], status="failed", error="server exited with status 1 before it was "
                                                                        "healthy")
    text = table.report(state)
    assert "2 of 9 runs ok, 1 failed, 6 not run" in text
    assert "off (n=1, exploratory)" in text and "seed-baseline (n=0, exploratory)" in text
    assert "| 100.00 | 110.00 | +10.0% (n=1/1: too few servers for a 95% interval) | - | - |" in text
    assert text.rstrip().endswith("- m-tp1-r1-seed-baseline: server exited with status 1 before it was healthy")


def test_resume_does_pending_runs_only(sglang_plan, tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    state = results.resume(out, sglang_plan)
    assert [r.id for r in state.pending(False, "boot-1")] == [r.id for r in sglang_plan.runs()]
    runs = sglang_plan.runs()
    state.runs[runs[0].id] = record(runs[0])
    state.runs[runs[1].id] = record(runs[1], status="failed", error="boom")
    state.save(out)
    again = results.resume(out, sglang_plan)
    assert [r.id for r in again.pending(False, "boot-1")] == [r.id for r in runs[2:]]
    assert [r.id for r in again.pending(True, "boot-1")] == [r.id for r in runs[1:]]


@pytest.fixture
def warm_plan(plan_from, tmp_path):
    plan, _ = plan_from("--engine", "vllm", "--models", "m", "--variants", "off,on", "--repeats", "3", "--warmup", "1",
                        "--workloads", "decode-c1", "--scale", "0.1", "--out", str(tmp_path / "o"))
    return plan


def _ran_on(state, runs, machine, **kw):
    for run in runs:
        state.runs[run.id] = {**record(run, **kw), "machine": machine}


def test_a_plan_resumed_on_another_machine_warms_up_there_first(warm_plan):
    runs = warm_plan.runs()  # w1-off, r1-off, r1-on, r2-off, ...
    state = results.State(warm_plan)
    _ran_on(state, runs[:3], "boot-1")
    assert [r.id for r in state.pending(False, "boot-1")] == [r.id for r in runs[3:]]
    again = state.pending(False, "boot-2")
    assert [r.id for r in again] == ["m-tp1-w2-off"] + [r.id for r in runs[3:]]
    assert (again[0].variant, again[0].repeat) == ("off", 0)
    _ran_on(state, again[:2], "boot-2")  # the second warm-up and r2-off ran there; a third machine: w3
    assert [r.id for r in state.pending(False, "boot-3")][:2] == ["m-tp1-w3-off", runs[4].id]
    assert [r.id for r in state.pending(False, "boot-2")] == [r.id for r in runs[4:]]


def test_no_extra_warm_up_in_a_plan_without_warm_ups_nor_in_a_fresh_plan(warm_plan, sglang_plan):
    state = results.State(sglang_plan)  # no --warmup: the plan's first server is cold by choice
    _ran_on(state, sglang_plan.runs()[:2], "boot-1")
    assert [r.id for r in state.pending(False, "boot-2")] == [r.id for r in sglang_plan.runs()[2:]]
    fresh = results.State(warm_plan)  # a fresh plan starts with its own warm-up
    assert [r.id for r in fresh.pending(False, "boot-2")] == [r.id for r in warm_plan.runs()]


def test_a_server_that_never_became_healthy_warmed_nothing(warm_plan):
    runs = warm_plan.runs()
    state = results.State(warm_plan)
    _ran_on(state, runs[:2], "boot-1")
    state.runs[runs[1].id]["server_start_s"] = None  # r1-off never healthy on boot-2: not warm there
    state.runs[runs[1].id].update(status="failed", machine="boot-2")
    assert [r.id for r in state.pending(True, "boot-2")][:2] == ["m-tp1-w2-off", runs[1].id]


def test_records_of_an_earlier_runner_without_a_machine_count_as_another_machine(warm_plan):
    runs = warm_plan.runs()
    state = results.State(warm_plan)
    for run in runs[:3]:
        state.runs[run.id] = record(run)
    assert state.pending(False, "boot-1")[0].id == "m-tp1-w2-off"


def test_the_server_table_lists_a_later_machine_s_warm_up_where_it_ran(warm_plan):
    runs = warm_plan.runs()
    state = results.State(warm_plan)
    _ran_on(state, runs[:3], "boot-1")
    _ran_on(state, state.pending(False, "boot-2")[:2], "boot-2", tput=10.0)
    text = table.report(state)
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| m-tp1-")]
    assert rows == ["| m-tp1-w1-off (warm-up)", "| m-tp1-r1-off", "| m-tp1-r1-on", "| m-tp1-w2-off (warm-up)",
                    "| m-tp1-r2-off"]
    assert "off (n=2, exploratory)" in text  # the second warm-up is in no statistic
    assert "first, and 1 more first on the later machine(s) this resumed plan ran on (cold" in text
    _ran_on(state, runs[3:], "boot-2")
    assert "1 warm-up server(s) per model first (cold" in table.report(results.State(warm_plan, {
        r.id: state.runs[r.id] for r in runs}))


def test_resume_refuses_a_different_plan(sglang_plan, tmp_path, plan_from):
    out = tmp_path / "res"
    out.mkdir()
    results.State(sglang_plan).save(out)
    other, _ = plan_from("--engine", "sglang", "--models", "m", "--variants", "off,on-replace,seed-baseline",
                         "--workloads", "decode-c1", "--scale", "0.2", "--out", str(out))
    with pytest.raises(UsageError, match=r"holds a different plan \(differs in workloads\)"):
        results.resume(out, other)


def test_more_repeats_grow_a_plan_after_its_recorded_servers_and_fewer_are_refused(warm_plan, tmp_path):
    out = tmp_path / "grow"
    out.mkdir()
    state = results.State(warm_plan)
    _ran_on(state, warm_plan.runs(), "boot-1")
    state.save(out)
    more = dataclasses.replace(warm_plan, repeats=5)
    grown = results.resume(out, more)
    assert grown.plan.repeats == 5 and grown.runs == state.runs
    assert [r.id for r in grown.pending(False, "boot-1")] == ["m-tp1-r4-off", "m-tp1-r4-on", "m-tp1-r5-off",
                                                             "m-tp1-r5-on"]
    with pytest.raises(UsageError, match=r"differs in repeats\); accepted: the same options to continue it "
                                         r"\(more --repeats than its 3 add servers\)"):
        results.resume(out, dataclasses.replace(warm_plan, repeats=2))
    with pytest.raises(UsageError, match=r"differs in repeats, warmup\)"):
        results.resume(out, dataclasses.replace(more, warmup=2))


def test_the_report_names_a_plan_wide_server_env_and_a_resume_without_it_is_refused(warm_plan, tmp_path):
    assert "also ran with" not in table.report(results.State(warm_plan))
    plan = dataclasses.replace(warm_plan, server_env={"TORCHINDUCTOR_DETERMINISTIC": "1"})
    assert "Every server of every variant also ran with `TORCHINDUCTOR_DETERMINISTIC=1`." in table.report(
        results.State(plan))
    out = tmp_path / "env"
    out.mkdir()
    results.State(plan).save(out)
    assert results.State.load(out).plan.server_env == {"TORCHINDUCTOR_DETERMINISTIC": "1"}
    with pytest.raises(UsageError, match=r"differs in server_env\)"):
        results.resume(out, warm_plan)


def test_report_and_status_commands_from_the_state_file(sglang_plan, tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    state = results.State(sglang_plan)
    for run in sglang_plan.runs()[:4]:
        state.runs[run.id] = record(run)
    state.save(out)
    done = subprocess.run([sys.executable, "-m", "integration.serve_ab", "report", "--out", str(out / "results.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == table.report(results.State.load(out))
    done = subprocess.run([sys.executable, "-m", "integration.serve_ab", "status", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.splitlines()[:2] == [f"{out}: sglang TP1, 9 runs: 4 ok, 0 failed, 5 to do",
                                            "no runner working on it; continue with the same "
                                            "`python3 -m integration.serve_ab run ...`"]
    done = subprocess.run([sys.executable, "-m", "integration.serve_ab", "report", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "not a results file of this runner" in done.stderr


def test_warmup_servers_are_listed_but_not_compared_nor_counted(plan_from, tmp_path):
    plan, _ = plan_from("--engine", "vllm", "--models", "m", "--variants", "off,on", "--repeats", "4", "--warmup", "1",
                        "--workloads", "decode-c1", "--scale", "0.1", "--out", str(tmp_path / "o"))
    state = results.State(plan)
    for run in plan.runs():
        cold = run.repeat == 0
        state.runs[run.id] = record(run, tput=10.0 if cold else 100.0 + run.repeat, ids=[4, 9] if cold else None)
        state.runs[run.id]["server"] = {"compile": "fresh: 2 compiled (24.8 s), 0 loaded (0.0 s)" if cold else
                                        "cache: 0 compiled (0.0 s), 2 loaded (2.0 s)"}
    text = table.report(state)
    assert "off (n=4)" in text and "on (n=4)" in text
    assert "| off (control) | 6 of 6 pairs identical |" in text and "FAILURE" not in text
    assert "| Output throughput (tok/s) | 102.50 (101.75-103.25) | 102.50 (101.75-103.25) | no difference within" in text
    assert "| m-tp1-w1-off (warm-up) | dummy | 40.0 | fresh: 2 compiled (24.8 s), 0 loaded (0.0 s) |" in text
