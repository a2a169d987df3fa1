"""FlashAttention backends whose metadata builds tell attn-sched the phase (capture or not).

Registered with vLLM's own ``register_backend`` (0.13+) under the FLASH_ATTN (and, from 0.16,
FLASH_ATTN_DIFFKV) enum members, so vLLM builds these instead of the stock classes. They differ
only in the builder: vLLM checks backends and impls with ``isinstance``, which subclasses pass.
vLLM imports this module when it resolves the backend, never before.
"""

from __future__ import annotations

from attn_sched_plugin.adapters.vllm import stepping
from attn_sched_plugin.adapters.vllm_targets import STEP_METHODS, STORE_METHOD
from attn_sched_plugin.guard import following
from vllm.v1.attention.backends import flash_attn as _fa


def stepping_builder(base: type) -> type:
    """A subclass of ``base`` whose metadata builds tell the adapter the phase (``vllm.stepping``) and
    whose metadata copies the guard follows (``guard.following``)."""
    methods = {name: stepping(name, getattr(base, name)) for name in STEP_METHODS if hasattr(base, name)}
    if hasattr(base, STORE_METHOD):
        methods[STORE_METHOD] = following(getattr(base, STORE_METHOD))
    return type(base.__name__, (base,), {"__module__": __name__, "__qualname__": base.__name__, **methods})


FlashAttentionMetadataBuilder = stepping_builder(_fa.FlashAttentionMetadataBuilder)


class FlashAttentionBackend(_fa.FlashAttentionBackend):
    @staticmethod
    def get_builder_cls() -> type:
        return FlashAttentionMetadataBuilder


try:  # vLLM 0.16+
    from vllm.v1.attention.backends import flash_attn_diffkv as _diffkv
except ImportError:
    _diffkv = None

if _diffkv is not None:

    class FlashAttentionDiffKVBackend(_diffkv.FlashAttentionDiffKVBackend):
        @staticmethod
        def get_builder_cls() -> type:
            return FlashAttentionMetadataBuilder
