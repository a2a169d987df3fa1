"""Engine-shaped attention steps with embedded shapes (no hub access needed)."""

from __future__ import annotations

from typing import NamedTuple


class Preset(NamedTuple):
    name: str
    description: str
    layers: int
    num_heads: int  # per GPU at the preset's tensor-parallel degree
    num_kv_heads: int
    head_dim: int
    head_dim_v: int  # != head_dim for MLA (q/k rope dim vs latent dim, passed as qv)
    windows: tuple  # per-layer sliding window (tokens) or None, repeated over the layers
    sinks: bool
    page_size: int
    hidden: int  # hidden size, for the all-reduce between layers under --tp
    tp: int

    @property
    def mla(self) -> bool:
        return self.head_dim_v != self.head_dim

    def window_of(self, layer: int):
        return self.windows[layer % len(self.windows)]

    def sharded(self, tp: int) -> "Preset":
        """The per-GPU shape at another tensor-parallel degree (heads split, KV heads at least 1)."""
        heads, kv = self.num_heads * self.tp, self.num_kv_heads * self.tp
        if heads % tp:
            raise ValueError(f"--tp {tp} does not divide the {heads} attention heads of {self.name}")
        return self._replace(num_heads=heads // tp, num_kv_heads=max(1, kv // tp), tp=tp)


PRESETS = {p.name: p for p in (
    Preset("qwen3-32b-tp1", "Qwen3-32B at TP1 (SGLang PR #20943 shapes)", 64, 64, 8, 128, 128, (None,), False, 16, 5120, 1),
    Preset("qwen3-32b-tp4", "Qwen3-32B at TP4, per GPU (SGLang PR #20943 shapes)", 64, 16, 2, 128, 128, (None,), False, 16, 5120, 4),
    Preset("llama-3.1-70b-tp8", "Llama-3.1-70B at TP8, per GPU", 80, 8, 1, 128, 128, (None,), False, 16, 8192, 8),
    Preset("gpt-oss-120b-like", "gpt-oss-120b-like: alternating 128-token sliding-window and full layers, sinks, hdim 64",
           36, 64, 8, 64, 64, (128, None), True, 16, 2880, 1),
    Preset("gemma-3-27b-like", "Gemma-3-27B-like: 5 local (1024-token window) : 1 global", 62, 32, 16, 128, 128,
           (1024, 1024, 1024, 1024, 1024, None), False, 16, 5376, 1),
    Preset("deepseek-v3-like-mla", "DeepSeek-V3-like MLA at TP8: q/k rope 64 + latent v 512 via qv, 1 KV head",
           61, 16, 1, 64, 512, (None,), False, 64, 7168, 8),
)}

# query tokens per request for each step kind; decode and verify are captured in CUDA graphs like
# the engines' decode, extend runs eagerly like their prefill
MODES = {"decode": 1, "verify": 4, "extend": 512}


MAX_EXTEND_TOKENS = 8192  # extend points with more new tokens per step are skipped


def grid(args) -> list[tuple]:
    """(preset, mode, batch, context) of every point the bench's arguments ask for."""
    points = []
    for preset in args.preset or ["qwen3-32b-tp4"]:
        for mode in args.mode or ["decode"]:
            for context in args.context:
                for batch in args.batch:
                    if mode == "extend" and batch * MODES[mode] > MAX_EXTEND_TOKENS:
                        continue
                    points.append((PRESETS[preset], mode, batch, context))
    return points
