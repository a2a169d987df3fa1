"""``attn-sched doctor``'s verdict agrees with what the adapter really does, in each engine env."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from attn_sched_plugin import activation, doctor
verdict = doctor.diagnose()
report = activation.instrument(sys.argv[1])
print(json.dumps({"doctor_active": verdict["active"], "verdict": verdict["verdict"],
                  "installed": bool(report is not None and report.active),
                  "reason": None if report is None else report.reason}))
"""


def _probe(engine: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, engine], capture_output=True, text=True, timeout=300,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.sglang
def test_doctor_matches_sglang_adapter():
    pytest.importorskip("sglang")
    result = _probe("sglang")
    assert result["doctor_active"] == result["installed"], result


@pytest.mark.vllm
def test_doctor_matches_vllm_adapter():
    pytest.importorskip("vllm")
    result = _probe("vllm")
    assert result["doctor_active"] == result["installed"], result
