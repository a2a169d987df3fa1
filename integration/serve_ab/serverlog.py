"""What besides our calls can make two servers of one plan differ, read from the server log (issue 21).

vLLM keys its torch.compile cache by config, code and environment: a server that compiled fresh
runs other kernels than one that loaded the graphs from the cache, and a different cache
directory means a different key. vLLM first tries its AOT-compiled artifact of the whole model; a
server whose load of it fails compiles again (under Inductor's deterministic mode every load failed:
it refused a benchmark during the load), and the report says so. The attention backend, the
cudagraph mode and async scheduling change what a step does. Every matching line is kept raw (the
first few of each kind); the digest is what the report shows. Lines follow vLLM 0.26.0
(``compilation/backends.py``, ``compilation/decorators.py``, ``platforms/cuda.py``, ``config/vllm.py``,
the engine's config line) and SGLang 0.5.16's server args and CUDA-graph capture lines; a line an
engine does not print leaves its field None.
"""

from __future__ import annotations

import re

PATTERNS = {
    "compile_cache_dir": re.compile(r"Using cache directory: (\S+) for vLLM's torch\.compile"),
    "compile_loaded_s": re.compile(r"Directly load the compiled graph\(s\) for compile range .* from the cache, "
                                   r"took ([\d.]+) s"),
    "compile_fresh_s": re.compile(r"Compiling a graph for compile range .* takes ([\d.]+) s"),
    "aot_loaded": re.compile(r"Directly load AOT compilation from path (\S+)"),
    "aot_failed": re.compile(r"Compiling model again due to a load failure from \S+, reason: (.*)"),
    "attention_backend": re.compile(r"Using (\S+) backend\.|attention_backend='(\w+)'"),
    "cudagraph_mode": re.compile(r"cudagraph_mode['\"]?\s*[:=]\s*<?(?:CUDAGraphMode\.)?([A-Z_]+)"),
    "async_scheduling": re.compile(r"Asynchronous scheduling is (enabled|disabled)"),
    "graph_capture_s": re.compile(r"Graph capturing finished in ([\d.]+) secs|Capture cuda graph end\. "
                                  r"Time elapsed: ([\d.]+) s"),
}
KEEP = 3  # raw lines kept per kind


def _value(m: re.Match) -> str:
    return next(g for g in m.groups() if g is not None)


def extract(text: str) -> dict:
    """``{"lines": {kind: [raw, ...]}, **digest}`` of one server log."""
    found: dict[str, list[str]] = {k: [] for k in PATTERNS}
    lines: dict[str, list[str]] = {k: [] for k in PATTERNS}
    for line in text.splitlines():
        for key, pattern in PATTERNS.items():
            m = pattern.search(line)
            if m:
                found[key].append(_value(m))
                if len(lines[key]) < KEEP:
                    lines[key].append(line.strip()[:400])
    loaded, fresh = [float(v) for v in found["compile_loaded_s"]], [float(v) for v in found["compile_fresh_s"]]
    digest = {
        "compile_cache_dir": found["compile_cache_dir"][0] if found["compile_cache_dir"] else None,
        "compile": (None if not (loaded or fresh) else
                    f"{'fresh' if fresh else 'cache'}: {len(fresh)} compiled ({sum(fresh):.1f} s), "
                    f"{len(loaded)} loaded ({sum(loaded):.1f} s)"),
        "aot": ("loaded" if found["aot_loaded"] else
                f"load failed, compiled again ({found['aot_failed'][0][:80]})" if found["aot_failed"] else None),
        "attention_backend": found["attention_backend"][0] if found["attention_backend"] else None,
        "cudagraph_mode": found["cudagraph_mode"][0] if found["cudagraph_mode"] else None,
        "async_scheduling": found["async_scheduling"][-1] if found["async_scheduling"] else None,
        "graph_capture_s": float(found["graph_capture_s"][-1]) if found["graph_capture_s"] else None,
    }
    return {"lines": {k: v for k, v in lines.items() if v}, **digest}


def table(state, model: str) -> list[str]:
    """One row per server of ``model`` in the order they ran, warm-ups (also those of a later machine)
    included and marked."""
    rows = ["| Server | weights | start s | compile | compile cache dir | attention backend | cudagraph mode "
            "| async scheduling | graph capture s | first workload TPOT ms |", "|---|---|---:|---|---|---|---|---|---:|---:|"]
    for rec in state.runs.values():
        if rec["model"] != model:
            continue
        log = rec.get("server") or {}
        bench = next(iter(rec.get("bench", {}).values()), None)
        marks = (" (warm-up)" if rec["repeat"] == 0 else "") + ("" if rec["status"] == "ok" else " FAILED")
        cells = [rec["id"] + marks,
                 rec.get("weights", "dummy"), f"{rec['server_start_s']}" if rec.get("server_start_s") else "-",
                 "; AOT artifact ".join(filter(None, [log.get("compile") or "-", log.get("aot")])),
                 f"`{log['compile_cache_dir']}`" if log.get("compile_cache_dir") else "-",
                 log.get("attention_backend") or "-", log.get("cudagraph_mode") or "-",
                 log.get("async_scheduling") or "-",
                 f"{log['graph_capture_s']:g}" if log.get("graph_capture_s") is not None else "-",
                 f"{bench['mean_tpot_ms']:.2f}" if bench else "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows
