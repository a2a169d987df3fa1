"""The generated model folders and the serve flags, against a real engine environment: the folders
load offline with its transformers/tokenizers, and every serve_flags.json entry goes through the
engine's own command-line parser (nothing is started). Runs in the tox engine envs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.integration.test_models import CONFIGS, FLAGS, make_models

pytestmark = [pytest.mark.sglang, pytest.mark.vllm]  # either engine env has transformers and tokenizers


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    pytest.importorskip("tokenizers")
    root = tmp_path_factory.mktemp("models")
    assert make_models.main(["--out", str(root)]) == 0
    return root


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_generated_folder_loads_offline(model_root, name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    folder = model_root / name
    config = transformers.AutoConfig.from_pretrained(folder)
    assert config.model_type == CONFIGS[name]["model_type"] and config.vocab_size == make_models.VOCAB
    assert transformers.GenerationConfig.from_pretrained(folder).do_sample is False
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(tok) == make_models.VOCAB and (tok.eos_token_id, tok.bos_token_id) == (make_models.EOS_ID, make_models.BOS_ID)
    ids = list(range(make_models.VOCAB - 400, make_models.VOCAB)) + random.Random(0).sample(range(make_models.VOCAB), 2000)
    assert tok.encode(tok.decode(ids), add_special_tokens=False) == ids


def test_sglang_parses_every_serve_flags_entry(capture_parse):
    pytest.importorskip("sglang")
    from sglang.srt.server_args import prepare_server_args

    from integration.serve_ab.commands import server_argv

    for setup, args in FLAGS["sglang"].items():
        # the command the runner starts (it adds --load-format dummy itself)
        full = server_argv("sglang", Path(f"/tmp/models/{setup.partition('+')[0]}"), 1, 30000, args, Path("/tmp/t"))
        argv = full[full.index("sglang.launch_server") + 1:]
        ns = capture_parse(lambda argv=argv: prepare_server_args(argv), ["sglang.launch_server", *argv])
        assert (ns.load_format, ns.attention_backend) == ("dummy", "fa3"), setup
        if "+eagle3" in setup:
            assert (ns.speculative_algorithm, ns.speculative_eagle_topk) == ("EAGLE3", 1), setup
