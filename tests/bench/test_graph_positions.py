"""benchmarks/graph_positions.py: kernel positions across servers, synthetic and on a committed plan."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("graph_positions", ROOT / "benchmarks" / "graph_positions.py")
gp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gp)

PREPARE = "void flash::prepare_varlen_num_blocks_kernel<1, false>(int)"


def excerpt(path: Path, durations: list[float], prepares: int, replays: int = 3, names: list[str] | None = None) -> Path:
    """A trace excerpt of ``replays`` graph launches, each running ``prepares`` prepare kernels first, then
    kernels ``names`` (default k0, k1, ...) with ``durations`` (us)."""
    evs = []
    for r in range(replays):
        t = 10_000.0 * r
        evs.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch", "ts": t, "dur": 5.0,
                    "args": {"correlation": r}})
        kernels = [PREPARE] * prepares + (names or [f"k{i}" for i in range(len(durations))])
        for i, (name, dur) in enumerate(zip(kernels, [2.0] * prepares + durations)):
            evs.append({"ph": "X", "cat": "kernel", "name": name, "ts": t + 10 * (i + 1), "dur": dur,
                        "args": {"correlation": r}})
    path.write_text(json.dumps({"traceEvents": evs}))
    return path


def test_a_layout_shift_moves_single_positions_both_ways_and_not_the_median(tmp_path):
    base = [1.0] * 8
    moved = [1.0, 1.3, 1.0, 0.8, 1.0, 1.3, 1.0, 1.0]  # two slower, one faster, the rest unmoved
    off = [gp.profile(excerpt(tmp_path / f"off{i}.json", [d + 0.01 * i for d in base], 4)) for i in range(3)]
    on = [gp.profile(excerpt(tmp_path / f"on{i}.json", [d + 0.01 * i for d in moved], 1)) for i in range(3)]
    assert off[0]["names"] == on[0]["names"] == [f"k{i}" for i in range(8)]  # prepares left out
    assert off[0]["prepare"] == (4, 8.0) and on[0]["prepare"] == (1, 2.0)
    c = gp.compare(off, on)
    assert c["slower"][0] == 2 and c["faster"][0] == 1 and c["median"] == 0.0
    assert abs(c["total"] - 0.4) < 1e-9 and abs(c["chance"] - 8 / 20) < 1e-9  # C(6, 3) = 20


def test_kernels_only_one_variant_runs_are_matched_out_and_listed_apart(tmp_path):
    """The arena's copies (one per shape) are kernels off never runs: the other positions still line up."""
    off = [gp.profile(excerpt(tmp_path / f"off{i}.json", [1.0, 2.0, 3.0, 4.0], 2, names=["a", "b", "c", "d"]))
           for i in range(2)]
    on = [gp.profile(excerpt(tmp_path / f"on{i}.json", [1.0, 0.5, 2.0, 3.0, 0.5, 4.5], 1,
                             names=["a", "copy", "b", "c", "copy", "d"])) for i in range(2)]
    c = gp.compare(off, on)
    assert c["positions"] == 4 and c["only_other"] == {"names": {"copy": 2}, "us": 1.0}
    assert c["only_base"] == {"names": {}, "us": 0} and c["total"] == 0.5 and c["slower"] == (1, 0.5)


def test_servers_of_one_variant_must_run_one_kernel_sequence(tmp_path):
    off = [gp.profile(excerpt(tmp_path / f"off{i}.json", [1.0] * 3, 1, names=names))
           for i, names in enumerate((["a", "b", "c"], ["a", "c", "b"]))]
    with pytest.raises(ValueError, match="one variant's servers run different kernel sequences"):
        gp.compare(off, off)


def test_a_slower_clock_moves_every_position_and_the_median(tmp_path):
    off = [gp.profile(excerpt(tmp_path / f"off{i}.json", [1.0 + 0.01 * i] * 6, 2)) for i in range(2)]
    on = [gp.profile(excerpt(tmp_path / f"on{i}.json", [1.1 + 0.01 * i] * 6, 2)) for i in range(2)]
    c = gp.compare(off, on)
    assert c["slower"][0] == 6 and c["faster"][0] == 0 and abs(c["median"] - 0.1) < 1e-9


def test_servers_that_overlap_are_not_counted_as_separated(tmp_path):
    off = [gp.profile(excerpt(tmp_path / f"off{i}.json", [1.0 + 0.1 * i] * 4, 2)) for i in range(3)]
    on = [gp.profile(excerpt(tmp_path / f"on{i}.json", [1.05 + 0.1 * i] * 4, 2)) for i in range(3)]
    c = gp.compare(off, on)
    assert c["slower"][0] == c["faster"][0] == 0


def test_the_committed_nocompile_plan_shows_the_layout_signature_of_the_doc():
    """docs/graph-memory-layout.md's table, from the committed excerpts of 4 + 4 servers."""
    lines = gp.report(ROOT / "benchmarks/results/real-engines/vllm-small-nocompile-h100")
    text = "\n".join(lines)
    assert "on (4 servers) against off (4), 1990 kernels per graph replay in both" in text
    assert "kernels only" not in text  # the plugin without the arena added no kernel besides its prepares
    assert "663 positions, +61.8 us" in text and "455 positions, -30.0 us" in text
    assert "expected by chance: 28.4 positions each way" in text
    assert "all positions: +33.3 us; the median position moves +0.000 us" in text
    assert "prepare kernels: off 26 x, 62.8 us; on 2 x, 4.4 us" in text


def test_the_committed_arena_plan_lines_up_past_the_arena_copies():
    """docs/graph-memory-layout.md's "with the fix" column: the arena's two copies matched out, the net shift
    of the other kernels down from +33.3 to +4.9 us per replay."""
    text = "\n".join(gp.report(ROOT / "benchmarks/results/real-engines/vllm-small-nocompile-h100-arena"))
    assert "on (4 servers) against off (4), 1990 kernels per graph replay in both" in text
    assert "kernels only on runs (left out above): 2 x memcpy32_post; 1.9 us" in text
    assert "452 positions, +29.6 us" in text and "412 positions, -26.2 us" in text
    assert "all positions: +4.9 us" in text and "GPU span per replay: off 5157.9 us, on 5150.8 us" in text


def test_without_a_folder_it_prints_its_usage(capsys):
    assert gp.main([]) == 2
    assert "python3 benchmarks/graph_positions.py benchmarks/results/" in capsys.readouterr().err
