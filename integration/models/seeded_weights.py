"""Seeded, realistic-scale random weights for a small model: ``model.safetensors`` in its folder.

Why: with ``--load-format dummy`` the engines fill weights with tiny uniform values and every model
repeats one token, so a numeric change in attention never shows. Normal(0, 0.02) matrices (a HF
init) make greedy text vary and long-context attention matter; norms are their init (Gemma's
``1 + w`` RMSNorm: zeros). One seed, one generator per device: the same machine kind writes the
same bytes (``weights.json`` records seed, std and device). A 1B model takes seconds on a GPU.
Served with the engine's default loader (the runner drops ``--load-format dummy`` when a folder
holds safetensors). Needs torch and safetensors (both on the GPU machine).
"""

from __future__ import annotations

import json
from pathlib import Path

SEED = 20943
STD = 0.02


def gemma3_shapes(c: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """HF parameter name -> (shape, init) of a Gemma3ForCausalLM text model (tied embeddings)."""
    h, d, q, kv, f = (c["hidden_size"], c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"],
                      c["intermediate_size"])
    out = {"model.embed_tokens.weight": ((c["vocab_size"], h), "normal"), "model.norm.weight": ((h,), "zeros")}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({
            p + "self_attn.q_proj.weight": ((q * d, h), "normal"), p + "self_attn.k_proj.weight": ((kv * d, h), "normal"),
            p + "self_attn.v_proj.weight": ((kv * d, h), "normal"), p + "self_attn.o_proj.weight": ((h, q * d), "normal"),
            p + "self_attn.q_norm.weight": ((d,), "zeros"), p + "self_attn.k_norm.weight": ((d,), "zeros"),
            p + "mlp.gate_proj.weight": ((f, h), "normal"), p + "mlp.up_proj.weight": ((f, h), "normal"),
            p + "mlp.down_proj.weight": ((h, f), "normal"),
            **{p + n + ".weight": ((h,), "zeros") for n in ("input_layernorm", "post_attention_layernorm",
                                                          "pre_feedforward_layernorm", "post_feedforward_layernorm")},
        })
    return out


SHAPES = {"Gemma3ForCausalLM": gemma3_shapes}


def shapes(config: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    arch = config["architectures"][0]
    if arch not in SHAPES or not config.get("tie_word_embeddings", False):
        raise SystemExit(f"seeded_weights: no weight layout for {arch} (tie_word_embeddings="
                         f"{config.get('tie_word_embeddings')}); accepted: {', '.join(SHAPES)} with tied embeddings")
    return SHAPES[arch](config)


def write(folder: Path, config: dict) -> Path:
    import torch
    from safetensors.torch import save_file

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(SEED)
    tensors = {}
    for name, (shape, init) in sorted(shapes(config).items()):  # sorted: the draw order is fixed
        t = torch.zeros(shape, dtype=torch.float32, device=device)
        if init == "normal":
            t.normal_(0.0, STD, generator=gen)
        tensors[name] = t.to(torch.bfloat16).cpu()
    path = folder / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    (folder / "weights.json").write_text(json.dumps({"seed": SEED, "std": STD, "device": device,
                                                     "torch": torch.__version__}, indent=1) + "\n")
    return path
