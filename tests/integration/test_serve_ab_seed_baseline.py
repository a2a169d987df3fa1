"""The seed-baseline plugin's generated distribution: found through entry points, registers one hook.

SGLang itself is stood in for by a tiny ``sglang.srt.plugins.hook_registry`` that records what is
registered (the real one, and SGLANG_PLUGINS filtering, are tested in the sglang env).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from attn_sched_plugin.adapters import sglang_targets
from integration.serve_ab import seed_baseline, seed_baseline_plugin

PROBE = textwrap.dedent("""
    import importlib.metadata as md, json, sys
    if sys.argv[1] == "with-sgl-kernel":
        sys.modules["sgl_kernel"] = type(sys)("sgl_kernel")
    eps = [ep for ep in md.entry_points(group="sglang.srt.plugins") if ep.name == "attn_sched_seed_baseline"]
    ep = eps[0]
    ep.load()()
    from sglang.srt.plugins.hook_registry import HookRegistry
    hook = HookRegistry.registered[0][1] if HookRegistry.registered else None
    print(json.dumps({"found": len(eps), "dist": ep.dist.name, "value": ep.value,
                      "registered": [(t, k) for t, _, k in HookRegistry.registered],
                      "hook_returns": None if hook is None else repr(hook(object(), 4, 100, None, None))}))
""")

STANDIN = {
    "sglang/__init__.py": "", "sglang/srt/__init__.py": "", "sglang/srt/plugins/__init__.py": "",
    "sglang/srt/plugins/hook_registry.py": textwrap.dedent("""
        import enum
        class HookType(enum.Enum):
            REPLACE = "replace"
        class HookRegistry:
            registered = []
            @classmethod
            def register(cls, target, hook, hook_type):
                cls.registered.append((target, hook, hook_type.value))
    """),
}


def _probe(tmp_path, mode):
    dist = seed_baseline.write_dist(tmp_path / "dist")
    for rel, text in STANDIN.items():
        (tmp_path / "standin" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "standin" / rel).write_text(text)
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": f"{tmp_path / 'standin'}:{dist}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_entry_point_registers_the_replace_hook(tmp_path):
    got, stderr = _probe(tmp_path, "with-sgl-kernel")
    assert (got["found"], got["dist"], got["value"]) == (1, "attn-sched-seed-baseline",
                                                         "attn_sched_seed_baseline:register")
    assert got["registered"] == [[seed_baseline_plugin.TARGET, "replace"]]
    assert got["hook_returns"] == "None"
    assert "attn-sched-seed-baseline: pid" in stderr and "REPLACE hook registered" in stderr


def test_no_hook_where_sgl_kernel_is_not_imported(tmp_path):
    got, stderr = _probe(tmp_path, "http-process")
    assert got["registered"] == [] and "nothing replaced" in stderr


def test_target_is_what_the_adapter_calls_sglangs_precompute():
    assert seed_baseline_plugin.TARGET == f"{sglang_targets.BACKEND}.{sglang_targets.PRECOMPUTE[0]}"
