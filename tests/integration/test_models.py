"""The shipped model configs and serve flags are consistent with each other and with the runner
(CPU, no engine): shapes that TP can split, layer patterns, the TP4-rank split, the EAGLE3 draft's
fit to its target, and flags that name only shipped models."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "integration" / "models"


def _load_make_models():
    spec = importlib.util.spec_from_file_location("make_models", MODELS / "make_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_models = _load_make_models()
CONFIGS = make_models.shipped()
FLAGS = json.loads((MODELS / "serve_flags.json").read_text())
LAYER_KINDS = {"sliding_attention", "full_attention"}


def test_the_issue_s_models_are_shipped():
    assert {"qwen3-32b", "qwen3-32b-tp4-rank", "gemma-3-like", "cohere2-like", "qwen3-32b-tp4-rank-eagle3",
            "gemma-3-1b-like", "gpt-oss-20b-like"} <= set(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_is_self_consistent(name):
    c = CONFIGS[name]
    assert len(c["architectures"]) == 1 and c["model_type"]
    assert c["vocab_size"] == make_models.VOCAB, "make_models.py makes one tokenizer size"
    assert c["num_attention_heads"] % c["num_key_value_heads"] == 0
    assert c["head_dim"] > 0 and c["hidden_size"] > 0 and c["num_hidden_layers"] > 0
    assert {c["bos_token_id"], c["eos_token_id"]} == {make_models.BOS_ID, make_models.EOS_ID}
    layers = c.get("layer_types")
    if layers is not None:
        assert len(layers) == c["num_hidden_layers"] and set(layers) <= LAYER_KINDS


@pytest.mark.parametrize(("name", "local_per_global", "window"),
                         [("gemma-3-like", 5, 1024), ("gemma-3-1b-like", 5, 512), ("cohere2-like", 3, 4096)])
def test_mixed_window_models_interleave_local_and_global_layers(name, local_per_global, window):
    c = CONFIGS[name]
    period = local_per_global + 1
    assert c["layer_types"] == [("full_attention" if (i + 1) % period == 0 else "sliding_attention")
                                for i in range(c["num_hidden_layers"])]
    assert c["sliding_window"] == window and c["sliding_window_pattern"] == period


def test_small_gemma_has_gemma_3_1b_s_text_shape():
    c = CONFIGS["gemma-3-1b-like"]
    shape = {k: c[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                               "num_key_value_heads", "head_dim", "query_pre_attn_scalar")}
    assert shape == {"num_hidden_layers": 26, "hidden_size": 1152, "intermediate_size": 6912, "num_attention_heads": 4,
                     "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256}
    assert "gemma-3-1b-like" in make_models.SEEDED and c["tie_word_embeddings"]


def test_gpt_oss_like_alternates_sliding_128_and_full_with_moe():
    c = CONFIGS["gpt-oss-20b-like"]
    assert c["layer_types"] == ["sliding_attention", "full_attention"] * 12 and c["sliding_window"] == 128
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (64, 8, 64)
    assert (c["num_local_experts"], c["num_experts_per_tok"]) == (32, 4) and "quantization_config" not in c
    assert "gpt-oss-20b-like" in FLAGS["vllm"] and "gpt-oss-20b-like" not in FLAGS["sglang"]


def test_tp4_rank_is_the_full_model_split_by_four():
    full, rank = CONFIGS["qwen3-32b"], CONFIGS["qwen3-32b-tp4-rank"]
    split = ("num_attention_heads", "num_key_value_heads", "intermediate_size")
    assert all(full[k] % 4 == 0 and rank[k] == full[k] // 4 for k in split)
    assert {k: v for k, v in rank.items() if k not in split} == {k: v for k, v in full.items() if k not in split}


def test_eagle3_draft_fits_its_target():
    draft, target = CONFIGS["qwen3-32b-tp4-rank-eagle3"], CONFIGS["qwen3-32b-tp4-rank"]
    assert draft["architectures"] == ["LlamaForCausalLMEagle3"] and draft["num_hidden_layers"] == 1
    assert draft["hidden_size"] == target["hidden_size"] and draft["vocab_size"] == target["vocab_size"]
    assert 0 < draft["draft_vocab_size"] <= draft["vocab_size"]
    # the draft's attention has the target rank's shape, so both share FA3 metadata shapes
    assert [draft[k] for k in ("num_attention_heads", "num_key_value_heads", "head_dim")] == \
           [target[k] for k in ("num_attention_heads", "num_key_value_heads", "head_dim")]


def _served_and_referenced(args: list[str]) -> list[str]:
    paths = [a for a in args if a.startswith("/tmp/models/")]
    for i, a in enumerate(args[:-1]):
        if a == "--speculative-config":
            paths.append(json.loads(args[i + 1])["model"])
    return [p.removeprefix("/tmp/models/") for p in paths]


def test_serve_flags_name_only_shipped_models():
    assert set(FLAGS) == {"sglang", "vllm"}
    for engine, setups in FLAGS.items():
        for setup, args in setups.items():
            model, _, variant = setup.partition("+")
            assert model in CONFIGS, f"{engine}/{setup}: serves an unshipped model"
            assert all(isinstance(a, str) for a in args)
            referenced = _served_and_referenced(args)
            assert all(r in CONFIGS for r in referenced), f"{engine}/{setup}: {referenced}"
            assert bool(variant) == bool(referenced), f"{engine}/{setup}: '+{variant}' names a draft model, and only then"


def test_serve_flags_leave_model_tp_host_port_and_weights_to_the_runner():
    from integration.serve_ab.commands import OWN_FLAGS

    for engine, setups in FLAGS.items():
        for setup, args in setups.items():
            own = {a.split("=")[0] for a in args} & set(OWN_FLAGS[engine])
            assert not own, f"{engine}/{setup} sets {own}, which the runner sets itself (--load-format dummy too)"


def test_serve_flags_survive_a_shell_round_trip():
    """The runner may pass them through a shell (``--extra-server-args``): the JSON argument must survive."""
    for setups in FLAGS.values():
        for args in setups.values():
            assert shlex.split(shlex.join(args)) == args


def test_make_models_refuses_an_unknown_model_in_one_line(capsys, tmp_path):
    assert make_models.main(["--out", str(tmp_path), "qwen3-32b", "llama-9000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown model llama-9000; accepted: " in err and "gemma-3-like" in err
    assert not any(tmp_path.iterdir())
