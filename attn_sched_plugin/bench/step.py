"""One engine-shaped attention step: L layers, each on its own paged KV cache, three variants.

(a) ``fa3``: no metadata; FA3 schedules in every layer.
(b) ``engine``: what SGLang >= 0.5.11 does, and vLLM for uniform models: metadata computed on the
    host before each step (outside any graph) and copied into a persistent buffer the layers
    read. Like SGLang, it covers plain-decode, full-attention, non-MLA layers only; the other
    layers schedule themselves.
(c) ``plugin``: the plugin as deployed. In a captured step the layers call its wrapped forward
    (``new_step()`` starts the step); in an eager step they call FA3 itself, because the adapters
    route FA3 through the wrapper only while CUDA graphs are captured (``adapters.routing``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .. import runtime
from ..binding import Binder
from ..descriptor import derive_fields
from ..interceptor import wrap
from .builds import FA3Build
from .presets import Preset

VARIANTS = ("fa3", "engine", "plugin")
KV_BUDGET_BYTES = 24 * 2**30  # per-layer caches up to this; beyond it layers share caches round-robin


class Step:
    def __init__(self, preset: Preset, build: FA3Build, batch: int, context: int, q_len: int,
                 device: torch.device, dtype=torch.bfloat16, seed: int = 0,
                 after_layer: Callable[[], None] | None = None):
        if not build.paged:
            raise ValueError(f"the bench needs an FA3 build with paged KV; {build.name} has none")
        self.preset, self.build, self.batch, self.context, self.q_len = preset, build, batch, context, q_len
        self.after_layer = after_layer  # e.g. the tensor-parallel all-reduce between layers
        gen = torch.Generator(device="cpu").manual_seed(seed)
        p = preset
        page = p.page_size
        pages_per_seq = math.ceil(context / page)
        num_pages = batch * pages_per_seq + 1
        per_layer = 2 * num_pages * page * p.num_kv_heads * max(p.head_dim, p.head_dim_v) * dtype.itemsize
        self.num_caches = max(1, min(p.layers, KV_BUDGET_BYTES // max(per_layer, 1)))

        def rand(*shape):
            return torch.randn(*shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)

        self.k_caches = [rand(num_pages, page, p.num_kv_heads, p.head_dim) for _ in range(self.num_caches)]
        # MLA: V is the latent cache (one KV head of width head_dim_v), QV the latent query
        self.v_caches = [rand(num_pages, page, p.num_kv_heads, p.head_dim_v) for _ in range(self.num_caches)]
        total_q = batch * q_len
        self.q = rand(total_q, p.num_heads, p.head_dim)
        self.qv = rand(total_q, p.num_heads, p.head_dim_v) if p.mla else None
        self.sinks = rand(p.num_heads) if p.sinks else None  # FA3 takes sinks in bf16 only
        perm = torch.randperm(num_pages - 1, generator=gen)[: batch * pages_per_seq].to(torch.int32) + 1
        self.block_table = perm.view(batch, pages_per_seq).to(device)
        self.cu_seqlens_q = (torch.arange(batch + 1, dtype=torch.int32) * q_len).to(device)
        self.cache_seqlens = torch.zeros(batch, dtype=torch.int32, device=device)
        self.set_lengths(seed)
        self.out = {v: torch.empty(p.layers, total_q, p.num_heads, p.head_dim_v, dtype=dtype, device=device)
                    for v in VARIANTS}
        self.wrapped = wrap(build.forward, build.fa3)
        self._binder = Binder(build.forward, build.fa3.convention)
        self.engine_buffers: dict[int, torch.Tensor] = {}
        self._engine_layers = [i for i in range(p.layers) if self._engine_covers(i)]

    def set_lengths(self, seed: int) -> None:
        """New per-request KV lengths, in place (what an engine does between steps), max = context."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        lengths = torch.randint(max(self.q_len, self.context // 2), self.context + 1, (self.batch,), generator=gen)
        lengths[0] = self.context
        self.cache_seqlens.copy_(lengths.to(torch.int32))

    def _engine_covers(self, layer: int) -> bool:
        return self.q_len == 1 and self.preset.window_of(layer) is None and not self.preset.mla

    def layer_kwargs(self, layer: int) -> dict:
        p = self.preset
        window = p.window_of(layer)
        return dict(
            q=self.q, k=self.k_caches[layer % self.num_caches], v=self.v_caches[layer % self.num_caches],
            max_seqlen_q=self.q_len, cu_seqlens_q=self.cu_seqlens_q, max_seqlen_k=self.context,
            seqused_k=self.cache_seqlens, block_table=self.block_table, q_v=self.qv, causal=True,
            window_size=(-1, -1) if window is None else (window - 1, 0), s_aux=self.sinks, fa_version=3,
        )

    # -- (b) engine-style host precompute ------------------------------------------------------------
    def engine_precompute(self) -> None:
        """Outside the graph, every step: the engine's host call plus a copy into its buffer."""
        if not self._engine_layers:
            return
        sig, batch = derive_fields(self._binder.fields((), self.layer_kwargs(self._engine_layers[0])),
                                   self.build.fa3.provider.seqlen_k_from_call)
        fresh = self.build.fa3.provider.compute(sig, batch)
        buffer = self.engine_buffers.get(0)
        if buffer is None:
            buffer = self.engine_buffers[0] = torch.empty_like(fresh)
        buffer.copy_(fresh)

    # -- the step itself ------------------------------------------------------------------------------
    def run(self, variant: str, captured: bool = True) -> None:
        """All layers once, as the variant would in a captured (default) or an eager step."""
        out = self.out[variant]
        shared = variant == "plugin" and captured
        if shared:
            runtime.new_step()
        for layer in range(self.preset.layers):
            kwargs = self.layer_kwargs(layer)
            if shared:
                self.wrapped(**kwargs, out=out[layer])
            else:
                metadata = self.engine_buffers.get(0) if variant == "engine" and layer in self._engine_layers else None
                self.build.forward(**kwargs, out=out[layer], scheduler_metadata=metadata)
            if self.after_layer is not None:
                self.after_layer()

    def distinct_shapes(self) -> int:
        """Distinct (window) schedules per step: what the plugin should compute."""
        return len({self.preset.window_of(i) for i in range(self.preset.layers)})
