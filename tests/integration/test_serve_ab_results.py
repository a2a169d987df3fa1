"""The harness reads the engines' own result files and prints the PR #20943-style table.

Sample files in data/ follow the real schemas: SGLang 0.5.23 ``sglang/benchmark/serving.py``
(one JSON line appended per run to ``--output-file``) and vLLM 0.33.0
``vllm/benchmarks/serve.py`` (one JSON object from ``--save-result``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).with_name("data")


def test_sglang_jsonl_last_line_is_read(serve_ab):
    got = serve_ab.read_bench_result("sglang", DATA / "sglang-0.5.23-bench_serving.jsonl")
    assert got == {"output_throughput": 131.41, "mean_tpot_ms": 7.61, "mean_itl_ms": 7.6, "mean_ttft_ms": 45.2}


def test_vllm_json_is_read(serve_ab):
    got = serve_ab.read_bench_result("vllm", DATA / "vllm-0.33.0-bench_serve.json")
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
def test_bad_result_file_names_the_problem(serve_ab, tmp_path, engine, text, message):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(serve_ab.ResultError, match=message) as info:
        serve_ab.read_bench_result(engine, path)
    assert str(path) in str(info.value)


def test_missing_result_file(serve_ab, tmp_path):
    with pytest.raises(serve_ab.ResultError, match="cannot read"):
        serve_ab.read_bench_result("sglang", tmp_path / "absent.jsonl")


def test_gsm8k_accuracy_line(serve_ab, tmp_path):
    # Printed by sglang/test/few_shot_gsm8k.py run_eval() (0.5.12 and 0.5.23 alike).
    out = tmp_path / "g.txt"
    out.write_text("Accuracy: 0.858\nInvalid: 0.000\nLatency: 21.137 s\nOutput throughput: 1055.201 token/s\n")
    assert serve_ab.read_gsm8k_result(out) == {"accuracy": 0.858}
    out.write_text("Latency: 1 s\n")
    with pytest.raises(serve_ab.ResultError, match="no 'Accuracy"):
        serve_ab.read_gsm8k_result(out)


def _rec(tput, tpot, itl, ttft):
    return {"output_throughput": tput, "mean_tpot_ms": tpot, "mean_itl_ms": itl, "mean_ttft_ms": ttft}


def test_table_uses_median_of_runs_and_signed_delta(serve_ab):
    w = serve_ab.WORKLOADS["decode-c1"]
    results = {
        # off medians: 131.41 / 7.61 / 7.60 / 45.00 ; on medians: 134.83 / 7.42 / 7.40 / 45.00
        ("off", w.name): [_rec(131.41, 7.61, 7.6, 45.0), _rec(100.0, 9.0, 9.0, 10.0), _rec(140.0, 7.0, 7.0, 50.0)],
        ("on", w.name): [_rec(134.83, 7.42, 7.4, 45.0), _rec(200.0, 7.42, 7.4, 99.0), _rec(120.0, 8.0, 8.0, 1.0)],
    }
    lines = serve_ab.format_table(results, [w], 3).splitlines()
    assert lines[0] == "| Workload | Metric | Plugin off (median of 3) | Plugin on (median of 3) | Delta |"
    assert lines[2:] == [
        "| BS=1 Decode-heavy (input=500, output=8K) | Output throughput (tok/s) | 131.41 | 134.83 | +2.6% |",
        "| BS=1 Decode-heavy (input=500, output=8K) | Mean TPOT (ms) | 7.61 | 7.42 | -2.5% |",
        "| BS=1 Decode-heavy (input=500, output=8K) | Mean ITL (ms) | 7.60 | 7.40 | -2.6% |",
        "| BS=1 Decode-heavy (input=500, output=8K) | Mean TTFT (ms) | 45.00 | 45.00 | +0.0% |",
    ]


def test_report_only_end_to_end_from_engine_files(serve_ab, tmp_path, capsys):
    """--report-only reads the per-run files the harness names and prints one table."""
    for mode in ("off", "on"):
        for run in (1, 2, 3):
            for name in ("decode-c1", "prefill-c8"):
                shutil.copy(DATA / "vllm-0.33.0-bench_serve.json", tmp_path / f"vllm-{mode}-run{run}-{name}.json")
    # one 'on' run of prefill-c8 is faster: the median must ignore it
    fast = json.loads((DATA / "vllm-0.33.0-bench_serve.json").read_text()) | {"output_throughput": 999.0}
    (tmp_path / "vllm-on-run2-prefill-c8.json").write_text(json.dumps(fast))

    rc = serve_ab.main(["--engine", "vllm", "--model", "m", "--workloads", "decode-c1,prefill-c8",
                        "--result-dir", str(tmp_path), "--report-only"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line for line in out.splitlines() if line.startswith("| BS=")]
    assert len(rows) == 8
    assert "| BS=8 Prefill-heavy (input=8K, output=500) | Output throughput (tok/s) | 133.27 | 133.27 | +0.0% |" in rows
    assert (tmp_path / "table.md").read_text().count("\n") == 10


def test_report_only_with_a_missing_run_fails_clearly(serve_ab, tmp_path, capsys):
    rc = serve_ab.main(["--engine", "sglang", "--model", "m", "--workloads", "decode-c1",
                        "--result-dir", str(tmp_path), "--report-only"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.startswith("serve_ab.py: failed:") and "sglang-off-run1-decode-c1.jsonl" in err
