"""The runner's SGLang side against the real sglang package (nothing is started).

Server commands of every variant parse with ``prepare_server_args`` (what ``sglang.launch_server``
calls); the client command parses with ``python -m sglang.bench_serving`` run as ``__main__`` and
samples the workload's exact lengths; the greedy and profile bodies validate as SGLang's HTTP layer
validates them (pydantic over its request types, unknown keys silently dropped, so every value is
checked); and the seed-baseline distribution, found by SGLang's real ``load_plugins()`` under the
variant's SGLANG_PLUGINS, replaces ``_compute_scheduler_metadata``.
"""

from __future__ import annotations

import inspect
import json
import os
import runpy
import subprocess
import sys

import pytest

pytest.importorskip("sglang")

from sglang.srt.server_args import prepare_server_args

from integration.serve_ab import commands, greedy, logprobs, profiling, results, seed_baseline, variants

pytestmark = [pytest.mark.sglang, pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture
def plan(plan_from, tmp_path):
    return plan_from("--engine", "sglang", "--models", "qwen3-32b", "--tp", "4", "--repeats", "1",
                     "--extra-server-args", "--attention-backend fa3 --context-length 9000", "--out", str(tmp_path))


def _module_main(module: str):
    return lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)


def test_server_commands_parse(plan, capture_parse, tmp_path):
    plan, s = plan
    assert plan.variants == ["off", "on-replace", "on-keep-native", "seed-baseline"]
    argv = commands.server_argv("sglang", s.models_dir / "qwen3-32b", plan.tp, s.port, plan.server_flags["qwen3-32b"],
                                tmp_path / "traces")
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
    ns = capture_parse(lambda: prepare_server_args(argv[3:]), ["sglang.launch_server", *argv[3:]])
    tp = ns.tp_size if hasattr(ns, "tp_size") else ns.tensor_parallel_size  # dest renamed after 0.5.12
    assert (ns.model_path, tp, ns.host, ns.port) == ("/tmp/models/qwen3-32b", 4, "127.0.0.1", 30000)
    assert (ns.load_format, ns.attention_backend, ns.context_length) == ("dummy", "fa3", 9000)


def test_bench_commands_parse_to_the_workloads(plan, capture_parse, tmp_path):
    plan, s = plan
    assert len(plan.workloads) == 5
    for w in plan.workloads:
        result = tmp_path / f"bench-{w.name}.jsonl"
        argv = commands.bench_argv("sglang", s.models_dir / "qwen3-32b", s.port, w, result)
        assert argv[1:3] == ["-m", "sglang.bench_serving"]
        ns = capture_parse(_module_main("sglang.bench_serving"), ["bench_serving.py", *argv[3:]])
        assert (ns.backend, ns.host, ns.port, ns.model) == ("sglang", "127.0.0.1", 30000, "/tmp/models/qwen3-32b")
        assert (ns.dataset_name, ns.random_range_ratio, ns.seed) == ("random-ids", 1.0, w.seed)
        assert (ns.random_input_len, ns.random_output_len, ns.max_concurrency, ns.num_prompts) == (
            w.input_len, w.output_len, w.concurrency, w.num_prompts)
        assert ns.output_file == str(result)
        assert not ns.disable_ignore_eos  # outputs run to full length


class _Tokenizer:
    """Just what SGLang's random-ids sampler touches."""

    vocab_size = 32000

    def num_special_tokens_to_add(self) -> int:
        return 0

    def decode(self, ids) -> str:
        return " ".join(map(str, ids))


def test_random_ids_lengths_are_exact(plan_from, capture_parse, tmp_path):
    """SGLang's own sampler, fed the parsed command, gives every request the shortened lengths."""
    from sglang.benchmark.datasets import get_dataset

    plan, s = plan_from("--engine", "sglang", "--models", "m", "--workloads", "balanced-c8", "--scale", "0.1",
                        "--out", str(tmp_path))
    argv = commands.bench_argv("sglang", s.models_dir / "m", s.port, plan.workloads[0], tmp_path / "r.jsonl")
    rows = get_dataset(capture_parse(_module_main("sglang.bench_serving"), ["bench_serving.py", *argv[3:]]),
                       _Tokenizer())
    assert len(rows) == 8
    assert {(r.prompt_len, r.output_len) for r in rows} == {(2000, 200)}


def test_result_fields_are_the_ones_sglang_writes():
    """The keys the runner reads are written literally by SGLang's result dict."""
    import sglang.bench_serving as bench

    source = inspect.getsource(inspect.getmodule(bench.BenchmarkMetrics))
    for key, _ in results.METRICS:
        assert f'"{key}": metrics.{key},' in source
    assert '"completed": metrics.completed,' in source


def test_greedy_and_profile_bodies_are_what_sglang_reads(tmp_path):
    from pydantic import TypeAdapter
    from sglang.srt.managers import tokenizer_manager
    from sglang.srt.managers.io_struct import GenerateReqInput, ProfileReq
    from sglang.srt.sampling.sampling_params import SamplingParams

    body = greedy.request_body("sglang", "/tmp/models/m", [7, 8, 9], 32, stream=True)
    req = TypeAdapter(GenerateReqInput).validate_python(body)
    assert (req.input_ids, req.stream, req.sampling_params) == ([7, 8, 9], True, body["sampling_params"])
    params = SamplingParams(**req.sampling_params)
    assert (params.top_k, params.max_new_tokens, params.ignore_eos) == (1, 32, True)  # temperature 0: greedy
    # the non-streamed answer carries the generated ids at the top level
    assert '"output_ids": state.output_ids' in inspect.getsource(tokenizer_manager)

    prof = TypeAdapter(ProfileReq).validate_python(profiling.start_body("sglang", tmp_path))
    assert (prof.output_dir, prof.activities, prof.with_stack, prof.record_shapes) == (
        str(tmp_path.resolve()), ["GPU"], False, False)
    assert prof.num_steps is None and not prof.profile_by_stage  # started now, stopped by /stop_profile


def test_logprob_body_is_what_sglang_reads_and_its_answer_keys_exist():
    from pydantic import TypeAdapter
    from sglang.srt.managers import tokenizer_manager
    from sglang.srt.managers.io_struct import GenerateReqInput

    req = TypeAdapter(GenerateReqInput).validate_python(logprobs.request_body("sglang", "m", [7, 8, 9], 24))
    assert (req.return_logprob, req.top_logprobs_num, req.logprob_start_len) == (True, logprobs.TOP, 0)
    source = inspect.getsource(tokenizer_manager.TokenizerManager.add_logprob_to_meta_info)
    for key in ("input_token_logprobs", "output_token_logprobs", "input_top_logprobs", "output_top_logprobs"):
        assert f'meta_info["{key}"]' in source


PROBE = r"""
import json, sgl_kernel  # as in SGLang's scheduler processes, imported before load_plugins()
from sglang.srt.plugins import load_plugins
load_plugins()
from sglang.srt.layers.attention.flashattention_backend import FlashAttentionBackend
fn = FlashAttentionBackend._compute_scheduler_metadata
wrapped = hasattr(fn, "__wrapped__")
returns = repr(fn(object(), 4, 100, None, None)) if wrapped else None
print("RESULT" + json.dumps({"wrapped": wrapped, "returns": returns}))
"""


def _probe(env: dict) -> tuple[dict, str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.split("RESULT")[-1]), out.stderr


@pytest.fixture
def engine_env(tmp_path_factory) -> dict:
    """This process's environment, as SGLang's scheduler processes would see it on CPU (stub driver)."""
    from tests.sglang.stub_libcuda import build

    stub = build(tmp_path_factory.mktemp("stub_libcuda")).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTN_SCHED_", "SGLANG_PLUGINS"))}
    env.update(LD_LIBRARY_PATH=f"{stub}:{env.get('LD_LIBRARY_PATH', '')}", SGLANG_USE_SGL_FA3_KERNEL="1")
    return env


def test_seed_baseline_variant_switches_sglangs_precompute_off(engine_env, tmp_path):
    dist = seed_baseline.write_dist(tmp_path / "dist")
    env = {**engine_env, **variants.environment("sglang", "seed-baseline", engine_env, dist, {})}
    got, stderr = _probe(env)
    assert got == {"wrapped": True, "returns": "None"}
    assert "attn-sched: disabled by ATTN_SCHED_DISABLE" in stderr  # the plugin itself is off there
    assert "attn-sched-seed-baseline: pid" in stderr and "REPLACE hook registered" in stderr


def test_other_variants_never_load_the_baseline(engine_env, tmp_path):
    dist = seed_baseline.write_dist(tmp_path / "dist")
    off = {**engine_env, **variants.environment("sglang", "off", engine_env, dist, {}), "PYTHONPATH": str(dist)}
    got, stderr = _probe(off)  # even with the dist on the path, SGLANG_PLUGINS=attn_sched filters it out
    assert got == {"wrapped": False, "returns": None}
    assert "attn-sched-seed-baseline" not in stderr and "attn-sched: disabled by ATTN_SCHED_DISABLE" in stderr
