"""What a server log says about compile cache, backend and graphs: lines as vLLM 0.26.0's format strings
(compilation/backends.py, platforms/cuda.py, config/vllm.py) and SGLang 0.5.16 print them."""

from __future__ import annotations

from types import SimpleNamespace

from integration.serve_ab import census, serverlog

VLLM_FRESH = """\
(EngineCore pid=812) INFO 11-27 10:00:01 [cuda.py:422] Using FLASH_ATTN backend.
INFO 11-27 10:00:00 [vllm.py:1110] Asynchronous scheduling is enabled.
(EngineCore pid=812) INFO 11-27 10:00:00 [core.py:117] Initializing a V1 LLM engine (v0.26.0) with config: model='/tmp/models/gemma-3-1b-like', compilation_config={"level": null, "mode": 3, "cudagraph_mode": <CUDAGraphMode.FULL_AND_PIECEWISE: (2, 1)>, "max_cudagraph_capture_size": 16}
(EngineCore pid=812) INFO 11-27 10:00:05 [backends.py:1095] Using cache directory: /root/.cache/vllm/torch_compile_cache/3f2a9c1d0e/rank_0_0/backbone for vLLM's torch.compile
(EngineCore pid=812) INFO 11-27 10:00:20 [backends.py:394] Compiling a graph for compile range (1, 16) takes 14.52 s
(EngineCore pid=812) INFO 11-27 10:00:31 [backends.py:394] Compiling a graph for compile range (17, 8192) takes 10.25 s
(EngineCore pid=812) INFO 11-27 10:00:40 [model_runner.py:748] Graph capturing finished in 4 secs, took 0.21 GiB
"""
VLLM_CACHED = """\
(EngineCore pid=99) INFO 11-27 10:05:05 [backends.py:1095] Using cache directory: /root/.cache/vllm/torch_compile_cache/3f2a9c1d0e/rank_0_0/backbone for vLLM's torch.compile
(EngineCore pid=99) INFO 11-27 10:05:06 [backends.py:293] Directly load the compiled graph(s) for compile range (1, 16) from the cache, took 1.204 s
(EngineCore pid=99) INFO 11-27 10:05:06 [backends.py:293] Directly load the compiled graph(s) for compile range (17, 8192) from the cache, took 0.801 s
"""
VLLM_AOT_REFUSED = VLLM_CACHED + """\
(EngineCore pid=99) WARNING 12-06 15:47:18 [decorators.py:321] Compiling model again due to a load failure from /root/.cache/vllm/torch_compile_cache/torch_aot_compile/c86d5e04b1/rank_0_0/model, reason: RuntimeError: In the deterministic mode of Inductor, we will avoid those
(EngineCore pid=99) WARNING 12-06 15:47:18 [decorators.py:321]         benchmarkings that would cause non deterministic results. Only benchmarkings in the vetted
"""
VLLM_AOT_LOADED = """\
(EngineCore pid=7) INFO 12-06 13:25:40 [decorators.py:316] Directly load AOT compilation from path /root/.cache/vllm/torch_compile_cache/torch_aot_compile/c86d5e04b1/rank_0_0/model
"""
SGLANG = """\
[2026-11-27 10:00:00] server_args=ServerArgs(model_path='/tmp/models/gemma-3-1b-like', attention_backend='fa3', cuda_graph_max_bs=16)
[2026-11-27 10:00:30 TP0] Capture cuda graph end. Time elapsed: 3.21 s. mem usage=0.30 GB. avail mem=120.1 GB.
"""


def test_fresh_compile_and_its_settings():
    got = serverlog.extract(VLLM_FRESH)
    assert {k: v for k, v in got.items() if k != "lines"} == {
        "compile_cache_dir": "/root/.cache/vllm/torch_compile_cache/3f2a9c1d0e/rank_0_0/backbone",
        "compile": "fresh: 2 compiled (24.8 s), 0 loaded (0.0 s)", "aot": None, "attention_backend": "FLASH_ATTN",
        "cudagraph_mode": "FULL_AND_PIECEWISE", "async_scheduling": "enabled", "graph_capture_s": 4.0}
    assert len(got["lines"]["compile_fresh_s"]) == 2


def test_cache_hit_and_sglang_lines():
    assert serverlog.extract(VLLM_CACHED)["compile"] == "cache: 0 compiled (0.0 s), 2 loaded (2.0 s)"
    got = serverlog.extract(SGLANG)
    assert (got["attention_backend"], got["graph_capture_s"], got["compile"], got["cudagraph_mode"]) == (
        "fa3", 3.21, None, None)


def test_whether_the_aot_artifact_loaded_or_failed_and_why():
    got = serverlog.extract(VLLM_AOT_REFUSED)
    assert got["aot"] == ("load failed, compiled again (RuntimeError: In the deterministic mode of Inductor, we will "
                          "avoid those)")
    assert (serverlog.extract(VLLM_AOT_LOADED)["aot"], serverlog.extract(VLLM_FRESH)["aot"]) == ("loaded", None)
    state = SimpleNamespace(runs={"m-r1-off": {"model": "m", "id": "m-r1-off", "repeat": 1, "status": "ok",
                                               "server": got}})
    cell = serverlog.table(state, "m")[2].split(" | ")[3]
    assert cell == f"cache: 0 compiled (0.0 s), 2 loaded (2.0 s); AOT artifact {got['aot']}"


def _rec(host, launch=None, replay=None):
    per = {"count": {"fa3_main": 26.0, "combine": 26.0, "prepare": 2.0, "memset_fill": 3.0, "other": 200.0},
           "gpu_us": {"fa3_main": 300.0, "combine": 50.0, "prepare": 4.5, "memset_fill": 6.0, "other": 1300.0},
           "busy_us": 1650.0, "period_us": 4300.0}
    return {"profile": {"ranks": [{"per_step": per, "host_step_us": None if host is None else
                                   {"median": host, "n": 500}, "graph_launch_us": launch,
                                   "graph_replay_us": replay}]}}


def test_census_row_is_the_median_over_servers():
    launch = lambda p, b: {"period": p, "busy": b, "n": 400}  # noqa: E731
    replay = {"span": 1900.0, "busy": 1600.0, "n": 400}
    rows = census.table(["off", "on"], {"off": [_rec(3000.0, launch(2700.0, 1400.0), replay), _rec(3100.0),
                                                _rec(3500.0, launch(2900.0, 1500.0))], "on": [_rec(None)]})
    assert rows[2] == ("| off | 3 | 26.0 / 300.0 | 26.0 / 50.0 | 2.0 / 4.5 | 3.0 / 6.0 | 200.0 / 1300.0 | 1650 | 10.5 | 4300 "
                       "| 3100 | 2800 / 1450 | 1900 / 1600 |")
    assert rows[3].endswith("| n/a (no per-step CPU annotation) | n/a (no graph launches) | n/a (no replayed kernels) |")
