"""benchmarks/logprob_diff_analysis.py: ties told from numbers, classes, and a run on a committed plan."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("logprob_diff_analysis", ROOT / "benchmarks" / "logprob_diff_analysis.py")
lda = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lda)


def test_kind_tells_a_boundary_tie_from_a_numeric_difference():
    a = [[1, -9.0], [2, -9.5], [3, -9.5]]
    assert lda.kind(a, list(a)) == "same"
    assert lda.kind(a, [[1, -9.0], [2, -9.5], [4, -9.5]]) == "tie"  # another id with an equal value
    assert lda.kind(a, [[1, -9.0], [2, -9.5], [3, -9.4]]) == "numeric"
    assert lda.kind(None, a) == "numeric"


def test_compare_top_counts_first_numeric_shift_only_and_propagation():
    xs = [None, [[1, -9.0], [2, -9.5]], [[1, -9.0], [2, -9.5]], [[1, -9.0], [2, -9.5]]]
    ys = [None, [[1, -9.0], [2, -9.5]], [[1, -9.25], [2, -9.75]], [[1, -9.0], [3, -9.5]]]
    c = lda.compare_top(xs, ys)
    assert (c["counts"]["same"], c["counts"]["tie"], c["counts"]["numeric"]) == (2, 1, 1)
    assert c["first"] == 2 and c["shift_only"] == 1 and not c["propagating"]


def test_classes_group_bitwise_identical_records():
    rec = lambda v: {"logprobs": {"prompts": [{"prompt_top": [[[1, v]]]}]}}  # noqa: E731
    runs = [dict(rec(-1.0), id="a"), dict(rec(-2.0), id="b"), dict(rec(-1.0), id="c")]
    assert [[r["id"] for r in g] for g in lda.classes(runs)] == [["a", "c"], ["b"]]


def test_report_on_the_committed_sglang_plan_finds_one_class(capsys):
    lda.main([str(ROOT / "benchmarks/results/real-engines/sglang-small/results.json.xz")])
    out = capsys.readouterr().out
    assert "11 servers, 1 bitwise classes" in out and "96 of 96 positions hold a repeated value" in out


def test_kernel_outliers_name_the_kernel_a_class_runs_otherwise():
    def rec(rid, red_us, extra=None):
        names = {"gemm": [26.0, 350.0], "triton_red_fused_3": [25.0, red_us], **(extra or {})}
        return {"id": rid, "profile": {"ranks": [{"per_step": {"by_name": names}}]}}
    reference = [rec("r1", 30.8), rec("r2", 31.7)]
    assert lda.kernel_outliers([rec("r3", 31.9)], reference) == []  # inside the slack
    (line,) = lda.kernel_outliers([rec("w1", 34.1)], reference)
    assert line.startswith("    w1: triton_red_fused_3: 25.00 per step, 34.10 us")
    (line,) = lda.kernel_outliers([rec("w2", 31.0, {"splitK": [26.0, 40.0]})], reference)
    assert "w2: splitK" in line
    assert lda.kernel_outliers([{"id": "old", "profile": {"ranks": [{"per_step": {}}]}}], reference) == []


def test_kernel_outliers_show_another_launch_config_under_the_same_name():
    """A Triton reduction keeps its name whichever config a server picked: the launch config tells them apart."""
    def rec(rid, us, config):
        ranks = [{"per_step": {"by_name": {"triton_red_rms_norm_0": [26.0, us]}},
                  "launch": {"triton_red_rms_norm_0": [config]}}]
        return {"id": rid, "profile": {"ranks": ranks}}
    narrow, wide = "block 256x1x1, 40 regs, 0 B shared", "block 512x1x1, 32 regs, 0 B shared"
    reference = [rec("r1", 109.3, narrow), rec("r2", 110.2, narrow)]
    head, config = lda.kernel_outliers([rec("w1", 89.1, wide)], reference)
    assert head.startswith("    w1: triton_red_rms_norm_0") and config == f"      launch ['{wide}']; reference ['{narrow}']"
    (head,) = lda.kernel_outliers([rec("r3", 154.5, narrow)], reference)  # slower, same config: no launch line


def test_report_on_the_committed_deterministic_mode_plan_ties_each_family_to_two_reductions(capsys):
    """vllm-small-det-h100: the servers' classes line up with the GPU times of two fused add-RMSNorm reductions."""
    lda.main([str(ROOT / "benchmarks/results/real-engines/vllm-small-det-h100/results.json.xz")])
    out = capsys.readouterr().out
    assert "11 servers, 9 bitwise classes" in out
    after = out.split("GPU us per decode step of those kernels on every server:\n")[1].splitlines()
    table = after[:next(i for i, line in enumerate(after) if not line.startswith("    "))]
    assert table[1] == "    K2 = triton_red_fused__to_copy_add_fused_add_rms_norm_rms_norm_0"
    rows = {line.split()[1]: line.split() for line in table if "gemma-3-1b-like-tp1-" in line}
    assert len(rows) == 11
    assert rows["gemma-3-1b-like-tp1-r3-off"][0] == "E" and rows["gemma-3-1b-like-tp1-r3-off"][3] == "154.5"
    assert {rows[f"gemma-3-1b-like-tp1-{r}"][0] for r in ("r1-off", "r2-on", "r5-on")} == {"B"}
