"""SGLang's real ``load_plugins()`` discovers and activates the adapter, in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("sglang")
pytestmark = pytest.mark.sglang

# mimics a scheduler process: sgl_kernel is imported (by SGLang's own modules) before load_plugins()
PROBE = r"""
import json
import sgl_kernel
from sglang.srt.plugins import load_plugins
load_plugins()
from attn_sched_plugin import activation
from attn_sched_plugin.adapters import sglang_targets as targets
report = activation.installed().get("sglang")
wrapped = {}
for target in (report.wrapped if report else []):
    if not target.endswith("(routed)"):
        wrapped[target] = hasattr(targets.resolve(target), "__wrapped__")
from sglang.srt.layers.attention import flashattention_backend as fb
era = targets.era_for(targets.parse(targets.installed_version()))
entry = targets.resolve(era.fa3_entry)
print("RESULT" + json.dumps({
    "report": None if report is None else report.as_dict(),
    "wrapped": wrapped,
    "entry_untouched": fb.flash_attn_with_kvcache is entry and not hasattr(entry, "__wrapped__"),
    "init_hooked": hasattr(fb.FlashAttentionBackend.init_forward_metadata, "__wrapped__"),
}))
"""


def _run(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_load_plugins_activates_adapter_and_wraps_every_target(subprocess_env):
    result = _run(subprocess_env)
    report = result["report"]
    assert report is not None and report["active"], report
    assert report["wrapped"], "no hook target reported"
    assert all(result["wrapped"].values()), result["wrapped"]
    # FA3 itself is untouched until a CUDA graph is captured (issue 12: no per-call cost in eager steps)
    assert result["entry_untouched"] and result["init_hooked"]
    assert any(t.endswith("flashattention_backend.flash_attn_with_kvcache (routed)") for t in report["wrapped"])


def test_sglang_plugins_allow_list_without_us_loads_nothing(subprocess_env):
    result = _run({**subprocess_env, "SGLANG_PLUGINS": "some_other_plugin"})
    assert result["report"] is None
    assert result["entry_untouched"] and not result["init_hooked"]


def test_attn_sched_disable_patches_nothing(subprocess_env):
    result = _run({**subprocess_env, "ATTN_SCHED_DISABLE": "1"})
    assert result["report"] is None
    assert result["entry_untouched"] and not result["init_hooked"]
