"""The Python surfaces of FA3 builds, mapped onto the forward op's own argument names.

FA3's Python wrappers rename arguments (``cache_seqlens`` -> ``seqused_k``, ``block_table`` ->
``page_table``) and hard-code some of them before calling ``fwd``. A ``Convention`` records that
mapping for one family of wrappers, so the descriptor can reason in the op's terms. An argument a
convention does not know is accepted only at its default value; otherwise the call is declined.
"""

from __future__ import annotations

import inspect
from typing import Callable, Mapping, NamedTuple


class Convention(NamedTuple):
    name: str
    # surface argument -> forward-op argument
    renames: Mapping[str, str]
    # forward-op arguments the wrapper always passes with this value, whatever the caller says
    fixed: Mapping[str, object]
    # arguments that select the kernel family; only value 3 reaches FA3 (SGLang ``ver``, vLLM ``fa_version``)
    version_arg: str | None
    # surface arguments with no influence on scheduling (scales, outputs, sinks, ...)
    neutral: frozenset[str]


_COMMON_NEUTRAL = frozenset(
    {"softmax_scale", "q_descale", "k_descale", "v_descale", "return_softmax_lse", "out", "rotary_interleaved",
     "scheduler_metadata"}
)

KVCACHE = Convention(
    name="kvcache",
    renames={
        "q": "q", "k_cache": "k", "v_cache": "v", "k": "k_new", "v": "v_new", "qv": "q_v",
        "rotary_cos": "rotary_cos", "rotary_sin": "rotary_sin", "rotary_seqlens": "seqlens_rotary",
        "cache_seqlens": "seqused_k", "cache_batch_idx": "kv_batch_idx", "cache_leftpad": "leftpad_k",
        "page_table": "page_table", "cu_seqlens_q": "cu_seqlens_q", "cu_seqlens_k_new": "cu_seqlens_k_new",
        "max_seqlen_q": "max_seqlen_q", "causal": "causal", "window_size": "window_size",
        "attention_chunk": "attention_chunk", "softcap": "softcap", "num_splits": "num_splits",
        "pack_gqa": "pack_gqa", "sm_margin": "sm_margin",
    },
    fixed={"cu_seqlens_k": None, "seqused_q": None, "max_seqlen_k": None},
    version_arg="ver",
    neutral=_COMMON_NEUTRAL | {"sinks"},
)

VARLEN = Convention(
    name="varlen-vllm",
    renames={
        "q": "q", "k": "k", "v": "v", "q_v": "q_v", "cu_seqlens_q": "cu_seqlens_q", "cu_seqlens_k": "cu_seqlens_k",
        "seqused_k": "seqused_k", "max_seqlen_q": "max_seqlen_q", "max_seqlen_k": "max_seqlen_k",
        "block_table": "page_table", "causal": "causal", "window_size": "window_size", "softcap": "softcap",
        "num_splits": "num_splits",
    },
    # vLLM's flash_attn_varlen_func passes these to the FA3 op unconditionally
    fixed={"pack_gqa": None, "sm_margin": 0, "attention_chunk": 0, "leftpad_k": None, "k_new": None,
           "v_new": None, "seqused_q": None, "cu_seqlens_k_new": None, "kv_batch_idx": None},
    version_arg="fa_version",
    neutral=_COMMON_NEUTRAL | {"s_aux", "deterministic", "return_attn_probs"},
)

CONVENTIONS = {c.name: c for c in (KVCACHE, VARLEN)}


class Binder:
    """Maps one wrapped function's ``(*args, **kwargs)`` onto forward-op names, fast.

    Built once per wrapped function from its signature: positional names and defaults are
    precomputed so a call costs a zip and a dict update, not ``inspect.Signature.bind``.
    """

    __slots__ = ("convention", "positional", "defaults", "foreign_defaults", "accepts_metadata")

    def __init__(self, fn: Callable, convention: Convention):
        params = inspect.signature(fn).parameters
        self.convention = convention
        self.positional = tuple(
            n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        self.defaults = {n: p.default for n, p in params.items() if p.default is not p.empty}
        known = set(convention.renames) | convention.neutral | {convention.version_arg}
        # arguments this convention does not understand: fine only at their default
        self.foreign_defaults = {n: d for n, d in self.defaults.items() if n not in known}
        self.accepts_metadata = "scheduler_metadata" in params

    def bind(self, args: tuple, kwargs: dict) -> dict:
        """The call's arguments by surface name, defaults filled in."""
        bound = dict(self.defaults)
        bound.update(zip(self.positional, args))
        bound.update(kwargs)
        return bound

    def foreign_argument(self, bound: dict) -> str | None:
        """Name of an argument set to a non-default value that this convention cannot reason about."""
        for name, default in self.foreign_defaults.items():
            value = bound.get(name, default)
            if value is default or (isinstance(value, (bool, int, float, str, tuple)) and value == default):
                continue
            return name
        for name in bound.keys() - self.defaults.keys() - set(self.positional):
            if name not in self.convention.renames and name not in self.convention.neutral:
                return name  # **kwargs pass-through of something unknown
        return None

    def to_op_args(self, bound: dict) -> dict:
        """The call's arguments under the forward op's names, as the wrapper hands them to ``fwd``."""
        renames = self.convention.renames
        op = {renames[n]: v for n, v in bound.items() if n in renames}
        op.update(self.convention.fixed)
        return op
