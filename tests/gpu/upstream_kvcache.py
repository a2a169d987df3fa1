"""Pytest plugin: FA3's own upstream kvcache tests, run with attn-sched wrapped into every call.

FA3's ``hopper/test_flash_attn.py::test_flash_attn_kvcache`` (upstream's code: not part of this
repository; ``integration/gpu_run.sh upstream`` fetches nothing, it runs the copy carried in
``.carry/upstream/``) imports ``flash_attn_interface``. This plugin installs the fa3-fwd wheel's
interface under that name, with ``flash_attn_with_kvcache`` replaced by a check: each call runs
FA3 alone (on a copy of the KV cache, which FA3 appends to in place), then the plugin's wrapper twice
in one step (the second call reuses the first's metadata), and every output and the resulting cache
must be bitwise equal to FA3 alone. The upstream test then checks the result against its reference
as usual. A configuration fa3-fwd was built without (paged KV, local attention, fp16) fails in FA3
alone: that test is skipped and counted, never compared.

Usage (GPU machine): ``ATTN_SCHED_UPSTREAM_EVERY=N`` keeps every N-th test;
``ATTN_SCHED_UPSTREAM_RESULTS=FILE`` receives the counts as JSON.
python -m pytest .carry/upstream/test_flash_attn.py::test_flash_attn_kvcache -p tests.gpu.upstream_kvcache
"""

from __future__ import annotations

import json
import os
import sys
import types
from collections import Counter

import pytest
import torch

COUNTS: Counter = Counter()


def _check_calls(fa3_module):
    from attn_sched_plugin import runtime
    from attn_sched_plugin.bench import builds
    from attn_sched_plugin.interceptor import wrap
    from attn_sched_plugin.verify import bitwise_equal

    plain = fa3_module.flash_attn_with_kvcache
    wrapped = wrap(plain, builds.fa3_fwd().fa3)

    def flash_attn_with_kvcache(q, k_cache, v_cache, *args, **kwargs):
        k_copy, v_copy = k_cache.clone(), v_cache.clone()
        try:
            expected = plain(q, k_copy, v_copy, *args, **kwargs)
        except RuntimeError as exc:
            if "does not support" in str(exc):
                COUNTS["fa3_unsupported"] += 1
                pytest.skip(f"fa3-fwd was built without this: {exc}")
            raise
        runtime.new_step()
        before = runtime.state().tally.injected
        results = [wrapped(q, k_cache, v_cache, *args, **kwargs) for _ in range(2)]
        tally = runtime.state().tally
        COUNTS["calls"] += 1
        COUNTS["injected_calls"] += tally.injected - before
        for reason, n in tally.passthrough.items():
            COUNTS[f"passthrough_{reason}"] += n
        # (out, softmax_lse, out_accum, lse_accum) with return_softmax_lse: the accumulators are scratch
        # buffers (uninitialised where no split wrote), so only out and lse are results
        exact = all(bitwise_equal(_results(r), _results(expected)) for r in results)
        exact = exact and bitwise_equal(k_cache, k_copy) and bitwise_equal(v_cache, v_copy)
        if not exact:
            COUNTS["mismatches"] += 1
        assert exact, "attn-sched: output with shared metadata differs from FA3 alone"
        return results[-1]

    return flash_attn_with_kvcache


def _results(out):
    return out[:2] if isinstance(out, (tuple, list)) else out


def pytest_configure(config):
    import fa3_fwd_interface

    module = types.ModuleType("flash_attn_interface")
    module.__dict__.update(vars(fa3_fwd_interface))
    module.flash_attn_with_kvcache = _check_calls(fa3_fwd_interface)
    sys.modules["flash_attn_interface"] = module


def pytest_collection_modifyitems(config, items):
    every = int(os.environ.get("ATTN_SCHED_UPSTREAM_EVERY", "1"))
    kept = items[::every]
    config.hook.pytest_deselected(items=[i for i in items if i not in kept])
    items[:] = kept
    COUNTS["tests_selected"] = len(kept)


def pytest_terminal_summary(terminalreporter):
    stats = {k: len(v) for k, v in terminalreporter.stats.items() if k in ("passed", "failed", "skipped", "error")}
    report = {"counts": dict(COUNTS), "tests": stats, "card": torch.cuda.get_device_name(),
              "torch": torch.__version__}
    terminalreporter.write_line(f"attn-sched upstream kvcache: {json.dumps(report)}")
    path = os.environ.get("ATTN_SCHED_UPSTREAM_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
