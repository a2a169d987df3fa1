"""Seeded weights: the layout of a Gemma-3 text model as vLLM's and HF's loaders name it, written and
read back on a tiny config (CPU torch), the same bytes from the same seed, and served without dummy."""

from __future__ import annotations

import json

import pytest

from integration.serve_ab import commands
from tests.integration.test_models import CONFIGS, MODELS, make_models



def _weights():
    import importlib.util

    spec = importlib.util.spec_from_file_location("seeded_weights", MODELS / "seeded_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny():
    return {**CONFIGS["gemma-3-1b-like"], "num_hidden_layers": 2, "vocab_size": 64, "hidden_size": 16,
            "intermediate_size": 32, "head_dim": 8}


def test_gemma3_layout_counts_the_1b_shape():
    shapes = _weights().shapes(CONFIGS["gemma-3-1b-like"])
    assert len(shapes) == 2 + 26 * 13
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == ((4 * 256, 1152), "normal")
    assert shapes["model.layers.25.self_attn.k_norm.weight"] == ((256,), "zeros")
    assert "lm_head.weight" not in shapes  # tied to the embedding


def test_written_weights_are_seeded_normal_and_reproducible(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors = pytest.importorskip("safetensors.torch")
    w = _weights()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    w.write(a, tiny()), w.write(b, tiny())
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    t = safetensors.load_file(str(a / "model.safetensors"))
    emb = t["model.embed_tokens.weight"].float()
    assert emb.dtype == torch.float32 and 0.015 < emb.std().item() < 0.025 and abs(emb.mean().item()) < 0.005
    assert t["model.norm.weight"].abs().sum().item() == 0  # Gemma's RMSNorm scales by 1 + w
    assert json.loads((a / "weights.json").read_text())["seed"] == w.SEED
    argv = commands.server_argv("vllm", a, 1, 8000, [], tmp_path / "traces")
    assert "--load-format" not in argv
    assert "dummy" in commands.server_argv("vllm", tmp_path, 1, 8000, [], tmp_path / "traces")


def test_unknown_architecture_is_refused_in_one_line():
    with pytest.raises(SystemExit, match="no weight layout for Qwen3ForCausalLM"):
        _weights().shapes(CONFIGS["qwen3-32b"])


def test_make_models_writes_weights_only_when_asked(tmp_path):
    pytest.importorskip("tokenizers")
    assert make_models.main(["--out", str(tmp_path), "gemma-3-1b-like"]) == 0
    assert not list((tmp_path / "gemma-3-1b-like").glob("*.safetensors"))
