"""Every vLLM entry of serve_flags.json goes through ``vllm serve``'s own parser (nothing is started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from integration.serve_ab.commands import server_argv  # noqa: E402
from tests.integration.test_models import FLAGS  # noqa: E402
from tests.integration.test_serve_ab_vllm import parse  # noqa: F401  (the fixture: vLLM's CLI, stopped after parsing)

pytestmark = pytest.mark.vllm


def test_vllm_parses_every_serve_flags_entry(parse):  # noqa: F811
    for setup, args in FLAGS["vllm"].items():
        model = f"/tmp/models/{setup.partition('+')[0]}"
        # the command the runner starts (it adds --load-format dummy itself), under vLLM's own parser
        argv = server_argv("vllm", Path(model), 1, 8000, args, Path("/tmp/traces"))
        ns = parse(argv)
        assert (ns.model_tag, ns.load_format, ns.max_model_len) == (model, "dummy", 10240), setup
        spec = ns.speculative_config
        if "+eagle3" in setup:
            spec = spec if isinstance(spec, dict) else json.loads(spec)
            assert spec["method"] == "eagle3" and spec["model"].startswith("/tmp/models/"), setup
        else:
            assert spec is None, setup
