"""The harness's SGLang commands, parsed by SGLang's own parsers (nothing is started).

Client: ``python -m sglang.bench_serving`` run as ``__main__`` (0.5.12 builds its parser under
``if __name__ == "__main__"``, 0.5.17+ in ``cli_main()``); server: ``prepare_server_args``, the
function ``sglang.launch_server`` calls (an ``ArgumentParser`` filled by
``ServerArgs.add_cli_args``); GSM8K: ``python -m sglang.test.few_shot_gsm8k`` as ``__main__``.
"""

from __future__ import annotations

import inspect
import runpy

import pytest

pytest.importorskip("sglang")

from sglang.srt.server_args import prepare_server_args

pytestmark = [pytest.mark.sglang, pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def steps(serve_ab):
    args = serve_ab.build_parser().parse_args(
        ["--engine", "sglang", "--model", "Qwen/Qwen3-32B", "--tp", "4", "--runs", "1", "--gsm8k",
         "--extra-server-args", "--attention-backend fa3"])
    return serve_ab.plan(serve_ab.options(args))


def _module_main(module: str):
    return lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)


def test_server_command_parses(steps, capture_parse):
    servers = [s for s in steps if s.kind == "server"]
    assert len(servers) == 2
    for step in servers:
        assert step.argv[1:3] == ["-m", "sglang.launch_server"]
        ns = capture_parse(lambda argv=step.argv[3:]: prepare_server_args(argv), ["sglang.launch_server", *step.argv[3:]])
        # the option's argparse dest: tensor_parallel_size up to 0.5.12, tp_size later
        tp = ns.tp_size if hasattr(ns, "tp_size") else ns.tensor_parallel_size
        assert (ns.model_path, tp, ns.host, ns.port) == ("Qwen/Qwen3-32B", 4, "127.0.0.1", 30000)
        assert ns.attention_backend == "fa3"


def test_bench_commands_parse_to_the_pr_workloads(serve_ab, steps, capture_parse):
    benches = [s for s in steps if s.kind == "bench"]
    assert len(benches) == 2 * len(serve_ab.WORKLOADS)
    for step in benches:
        assert step.argv[1:3] == ["-m", "sglang.bench_serving"]
        ns = capture_parse(_module_main("sglang.bench_serving"), ["bench_serving.py", *step.argv[3:]])
        w = step.workload
        assert (ns.backend, ns.host, ns.port, ns.model) == ("sglang", "127.0.0.1", 30000, "Qwen/Qwen3-32B")
        assert (ns.dataset_name, ns.random_range_ratio) == ("random-ids", 1.0)
        assert (ns.random_input_len, ns.random_output_len, ns.max_concurrency) == (w.input_len, w.output_len, w.concurrency)
        assert ns.output_file == str(step.result)
        assert not ns.disable_ignore_eos  # outputs run to full length


class _Tokenizer:
    """Just what SGLang's random-ids sampler touches."""

    vocab_size = 32000

    def num_special_tokens_to_add(self) -> int:
        return 0

    def decode(self, ids) -> str:
        return " ".join(map(str, ids))


def test_random_ids_lengths_are_exact(steps, capture_parse):
    """SGLang's own sampler, fed the parsed command, gives every request the workload's lengths."""
    from sglang.benchmark.datasets import get_dataset

    step = next(s for s in steps if s.kind == "bench" and s.workload.name == "balanced-c8")
    ns = capture_parse(_module_main("sglang.bench_serving"), ["bench_serving.py", *step.argv[3:]])
    rows = get_dataset(ns, _Tokenizer())
    assert len(rows) == 32
    assert {(r.prompt_len, r.output_len) for r in rows} == {(2000, 2000)}


def test_result_fields_are_the_ones_sglang_writes(serve_ab):
    """The keys the harness reads are written literally by SGLang's result dict."""
    import sglang.bench_serving as bench

    source = inspect.getsource(inspect.getmodule(bench.BenchmarkMetrics))
    for key, _ in serve_ab.METRICS:
        assert f'"{key}": metrics.{key},' in source
    assert '"completed": metrics.completed,' in source


def test_gsm8k_command_parses_and_targets_localhost(steps, capture_parse):
    from sglang.utils import normalize_base_url

    gsm = [s for s in steps if s.kind == "gsm8k"]
    assert len(gsm) == 2
    ns = capture_parse(_module_main("sglang.test.few_shot_gsm8k"), ["few_shot_gsm8k.py", *gsm[0].argv[3:]])
    assert normalize_base_url(ns.host, ns.port) == "http://127.0.0.1:30000"
