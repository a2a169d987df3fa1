"""The variants a plan compares, per engine, as the environment each variant's server starts with.

Only the server environment differs between variants; commands, seeds and prompts are the same.
``off`` is the reference every other variant's delta is taken against.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import seed_baseline_plugin
from .errors import UsageError

OFF = "off"
# variant -> what it means, for the report's legend
DESCRIPTIONS = {
    "sglang": {
        OFF: "plugin off (ATTN_SCHED_DISABLE=1): SGLang's own decode precompute (the seed PR) in place",
        "on-replace": "plugin on, ATTN_SCHED_SGLANG_MODE=replace: in CUDA graphs the plugin's in-graph metadata "
                      "serves every FA3 call (SGLang's capture/replay-time precompute off); eager steps untouched",
        "on-keep-native": "plugin on, ATTN_SCHED_SGLANG_MODE=keep-native: SGLang's precompute kept everywhere; in "
                          "CUDA graphs the plugin serves the calls SGLang leaves without metadata",
        "seed-baseline": "plugin off and SGLang's precompute replaced by a no-op (test-only SGLang plugin): "
                         "the seed PR's baseline, per-layer prepare_varlen_num_blocks",
    },
    "vllm": {
        OFF: "plugin off (ATTN_SCHED_DISABLE=1)",
        "on": "plugin on (ATTN_SCHED_DISABLE=0)",
    },
}
ALLOW_LIST = {"sglang": "SGLANG_PLUGINS", "vllm": "VLLM_PLUGINS"}
PLUGIN = "attn_sched"
# every server, every variant: periodic summaries (at-exit lines are not relied upon)
COMMON = {"ATTN_SCHED_SUMMARY_INTERVAL": "5"}
_OWN = {
    OFF: {"ATTN_SCHED_DISABLE": "1"},
    "on": {"ATTN_SCHED_DISABLE": "0"},
    "on-replace": {"ATTN_SCHED_DISABLE": "0", "ATTN_SCHED_SGLANG_MODE": "replace"},
    "on-keep-native": {"ATTN_SCHED_DISABLE": "0", "ATTN_SCHED_SGLANG_MODE": "keep-native"},
    "seed-baseline": {"ATTN_SCHED_DISABLE": "1"},
}


def check(engine: str, names: list[str]) -> list[str]:
    accepted = DESCRIPTIONS[engine]
    unknown = [n for n in names if n not in accepted]
    if unknown or not names:
        raise UsageError(f"--variants: {', '.join(map(repr, unknown)) or 'empty list'} not a {engine} variant; "
                         f"accepted: a comma list of {', '.join(accepted)}")
    if OFF not in names:
        raise UsageError(f"--variants must include {OFF!r}: every delta is taken against it")
    return list(dict.fromkeys(names))


def allowed_plugins(engine: str, inherited: dict[str, str]) -> list[str]:
    """The engine's plugin allow-list as the servers inherit it; refused if it shuts us out."""
    var = ALLOW_LIST[engine]
    names = [n.strip() for n in inherited.get(var, "").split(",") if n.strip()]
    if names and PLUGIN not in names:
        raise UsageError(f"{var}={inherited[var]!r} excludes {PLUGIN}, so 'plugin on' would be off; "
                         f"accepted: unset {var} or include {PLUGIN} in it")
    return names


def check_server_env(engine: str, items: list[str]) -> dict[str, str]:
    """``--server-env NAME=VALUE`` items as a dict; the variables that make the variants are refused: a
    plan-wide value would silently make two variants one."""
    owned = {ALLOW_LIST[engine], "PYTHONPATH", *(k for own in _OWN.values() for k in own), *COMMON}
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        valid = eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
        if not valid or name in owned or name.startswith("ATTN_SCHED_"):
            raise UsageError(f"--server-env {item!r}: accepted: NAME=VALUE with NAME an environment variable other "
                             f"than ATTN_SCHED_*, {ALLOW_LIST[engine]} and PYTHONPATH (the variants set those)")
        out[name] = value
    return out


def environment(engine: str, variant: str, inherited: dict[str, str], seed_dist: Path | None,
                plan_env: dict[str, str]) -> dict[str, str]:
    """What the variant's server gets on top of the engine environment: the plan's ``--server-env``, then
    the variant's own."""
    env = {**COMMON, **plan_env, **_OWN[variant]}
    if engine == "sglang":
        # the loaded plugin set is named explicitly so variants differ by the baseline plugin alone
        names = allowed_plugins(engine, inherited) or [PLUGIN]
        if variant == "seed-baseline":
            assert seed_dist is not None
            names = names + [seed_baseline_plugin.NAME]
            env["PYTHONPATH"] = ":".join(p for p in (inherited.get("PYTHONPATH", ""), str(seed_dist)) if p)
        env[ALLOW_LIST[engine]] = ",".join(names)
    return env
