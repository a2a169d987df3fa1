"""Real vLLM FlashAttention builder + impl on CPU, with the reference FA3 as ``vllm_flash_attn``.

What is real: ``VllmConfig``, the ``Attention`` layers (registered in the forward context, so
vLLM's own ``_get_sliding_window_configs`` decides AOT on/off), ``FlashAttentionMetadataBuilder``
(``build``, ``build_for_cudagraph_capture``, ``build_for_drafting``) and
``FlashAttentionImpl.forward``. What stands in: the FA3 entries (``standin``) and
``get_flash_attn_version`` (3: the CPU platform has no FA3 to ask).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from dataclasses import dataclass

import torch

from tests.vllm import standin

HEADS, KV_HEADS, HEAD = 4, 2, 64
BLOCK = 16


def fa3_in_place(monkeypatch) -> None:
    """Make this CPU process look like a CUDA one with vLLM's FA3 build (module globals only)."""
    import importlib

    fa = importlib.import_module("vllm.v1.attention.backends.flash_attn")
    monkeypatch.setattr(fa, "flash_attn_varlen_func", standin.make_varlen(), raising=False)
    monkeypatch.setattr(fa, "get_scheduler_metadata", standin.make_scheduler_metadata(), raising=False)
    monkeypatch.setattr(fa, "get_flash_attn_version", lambda *a, **k: 3)
    try:
        diffkv = importlib.import_module("vllm.v1.attention.backends.flash_attn_diffkv")
    except ImportError:
        return
    monkeypatch.setattr(diffkv, "flash_attn_varlen_func", standin.make_varlen(), raising=False)


def vllm_config(tmp_path: pathlib.Path, max_model_len: int = 256):
    from vllm.config import DeviceConfig, ModelConfig, VllmConfig

    model = tmp_path / "tiny"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HEADS * HEAD,
        "intermediate_size": 128, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": 2, "vocab_size": 128, "max_position_embeddings": max_model_len,
        "torch_dtype": "float32",
    }))
    mc = ModelConfig(model=str(model), tokenizer=str(model), skip_tokenizer_init=True, dtype="float32",
                     max_model_len=max_model_len)
    # explicit: the CUDA wheel on a machine without a GPU detects no platform
    return VllmConfig(model_config=mc, device_config=DeviceConfig(device="cpu"))


@dataclass
class Model:
    config: object
    layers: list
    builder: object


def make_model(config, windows: list[int | None], backend) -> Model:
    """Attention layers with these sliding windows (None = full) sharing one FA builder."""
    from vllm.config import set_current_vllm_config
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    try:
        from vllm.model_executor.layers.attention.attention import Attention
    except ImportError:  # vLLM < 0.16
        from vllm.attention.layer import Attention

    with set_current_vllm_config(config):
        layers = [
            Attention(HEADS, HEAD, HEAD**-0.5, KV_HEADS, per_layer_sliding_window=w,
                      prefix=f"model.layers.{i}.self_attn.attn", attn_backend=backend)
            for i, w in enumerate(windows)
        ]
        spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=KV_HEADS, head_size=HEAD, dtype=torch.float32)
        builder = backend.get_builder_cls()(spec, [l.layer_name for l in layers], config, torch.device("cpu"))
    return Model(config, layers, builder)


def make_batch(query_lens: list[int], seq_lens: list[int], table_width: int, seed: int = 0):
    """vLLM's ``CommonAttentionMetadata`` for a batch whose block tables are ``table_width`` wide."""
    try:
        from vllm.v1.attention.backend import CommonAttentionMetadata
    except ImportError:  # vLLM < 0.16
        from vllm.v1.attention.backends.utils import CommonAttentionMetadata

    g = torch.Generator().manual_seed(seed)
    n = len(query_lens)
    qsl = torch.tensor([0] + list(torch.tensor(query_lens).cumsum(0)), dtype=torch.int32)
    table = torch.arange(n * table_width, dtype=torch.int32).reshape(n, table_width)
    table = table[:, torch.randperm(table_width, generator=g)]
    tokens = int(qsl[-1])
    lens = torch.tensor(seq_lens, dtype=torch.int32)
    fields = {
        "query_start_loc": qsl, "query_start_loc_cpu": qsl.clone(), "seq_lens": lens, "num_reqs": n,
        "num_actual_tokens": tokens, "max_query_len": max(query_lens), "max_seq_len": max(seq_lens),
        "block_table_tensor": table, "slot_mapping": torch.zeros(tokens, dtype=torch.int64), "causal": True,
        # vLLM < 0.16 only
        "seq_lens_cpu": lens.clone(), "num_computed_tokens_cpu": lens - torch.tensor(query_lens, dtype=torch.int32),
    }
    names = {f.name for f in dataclasses.fields(CommonAttentionMetadata)}
    return CommonAttentionMetadata(**{k: v for k, v in fields.items() if k in names})


def kv_cache_shape(backend, num_blocks: int) -> tuple[int, ...]:
    """The FA KV-cache layout: stacked (2, blocks, ...) in 0.11-0.16, K|V interleaved per block in 0.32+."""
    if hasattr(backend, "get_kv_cache_shape"):
        return backend.get_kv_cache_shape(num_blocks, BLOCK, KV_HEADS, HEAD)
    return (num_blocks, KV_HEADS, BLOCK, 2 * HEAD)


def run_step(model: Model, common, method: str = "build", seed: int = 0) -> list[torch.Tensor]:
    """One model step: one metadata build, then every layer's forward; returns the outputs."""
    from vllm.forward_context import set_forward_context

    b = model.builder
    if method == "build":
        meta = b.build(common_prefix_len=0, common_attn_metadata=common)
    elif method == "build_for_cudagraph_capture":
        meta = b.build_for_cudagraph_capture(common)
    else:
        meta = b.build_for_drafting(common, draft_index=0)
    g = torch.Generator().manual_seed(seed)
    tokens = common.num_actual_tokens
    num_blocks = common.block_table_tensor.numel()
    outs = []
    with torch.inference_mode(), set_forward_context(None, model.config):
        for layer in model.layers:
            q = torch.randn(tokens, HEADS, HEAD, generator=g)
            kv = torch.randn(kv_cache_shape(layer.attn_backend, num_blocks), generator=g)
            out = torch.empty(tokens, HEADS, HEAD)
            # key/value None: the cache is already filled (0.11-0.16 would otherwise write it here)
            layer.impl.forward(layer, q, None, None, kv, meta, out)
            outs.append(out)
    return outs
