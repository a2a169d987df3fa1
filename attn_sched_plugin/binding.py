"""The Python surfaces of FA3 builds, mapped onto the forward op's own argument names.

FA3's Python wrappers rename arguments (``cache_seqlens`` -> ``seqused_k``, ``block_table`` ->
``page_table``) and hard-code some of them before calling ``fwd``. A ``Convention`` records that
mapping for one family of wrappers, so the descriptor can reason in the op's terms. An argument a
convention does not know is accepted only at its default value; otherwise the call is declined.
"""

from __future__ import annotations

import inspect
from operator import itemgetter
from typing import Callable, Mapping, NamedTuple

from .descriptor import OP_FIELDS
from .errors import Decline


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

def _at_default(value, default) -> bool:
    return value is default or (isinstance(value, (bool, int, float, str, tuple)) and value == default)


class Binder:
    """Maps one wrapped function's ``(*args, **kwargs)`` onto the forward-op fields ``parameters`` reads.

    Built once per wrapped function from its signature: each op field gets its source (the surface
    name mapped onto it, or a private key holding a ``fixed`` value or ``None``) with its default in
    ``base``; names outside the convention become foreign (fine only at their default). A call then
    costs a dict merge, a set test and one ``itemgetter``, all in C (``inspect.Signature.bind``
    costs ~20x more on this path).
    """

    __slots__ = ("convention", "positional", "defaults", "base", "read", "foreign", "plain", "version_default",
                 "metadata_position", "accepts_metadata")

    def __init__(self, fn: Callable, convention: Convention):
        params = inspect.signature(fn).parameters
        named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        self.convention = convention
        self.positional = tuple(
            n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        self.defaults = {n: p.default for n, p in named.items() if p.default is not p.empty}
        self.accepts_metadata = "scheduler_metadata" in params
        # past the positional slots when it is keyword-only: never taken from ``args``
        self.metadata_position = (
            self.positional.index("scheduler_metadata") if "scheduler_metadata" in self.positional else 1 << 30
        )
        self.version_default = self.defaults.get(convention.version_arg, 3)
        fixed = convention.fixed
        surface_of = {target: name for name, target in convention.renames.items() if target not in fixed}
        if len(surface_of) != len({t for t in convention.renames.values() if t not in fixed}):
            raise ValueError(f"convention {convention.name}: two surface names for one forward-op argument")
        # "#field" keys cannot be surface names, so fixed values are never overridden by the caller
        sources = [surface_of.get(field, f"#{field}") for field in OP_FIELDS]
        self.base = {
            source: fixed.get(field) if source.startswith("#") else self.defaults.get(source)
            for field, source in zip(OP_FIELDS, sources)
        }
        self.read = itemgetter(*sources)
        self.foreign, neutral = self._classify(named)
        self.plain = frozenset(self.base) | neutral | {n for n, _ in self.foreign}

    def _classify(self, named: dict) -> tuple[tuple[tuple[str, object], ...], frozenset[str]]:
        """(foreign arguments with their defaults, every other name a call may pass)."""
        convention = self.convention
        known = set(convention.renames) | convention.neutral | {"scheduler_metadata"}
        if convention.version_arg is not None:
            known.add(convention.version_arg)
        # unknown to the convention: fine only at its default (a required one is left as before: ignored)
        foreign = tuple((n, self.defaults[n]) for n in named if n not in known and n in self.defaults)
        return foreign, frozenset(known | {n for n in named if n not in self.defaults})

    def fields(self, args: tuple, kwargs: dict) -> tuple:
        """The call's values of ``descriptor.OP_FIELDS``, as the wrapper would hand them to ``fwd``.

        Raises ``Decline`` for engine-native metadata (first), a version other than FA3
        (``not_fa3``), or a foreign argument off its default (``arg_<name>``), in that order.
        """
        merged = {**self.base, **kwargs}
        if args:
            for name, value in zip(self.positional, args):
                merged[name] = value
        if merged.get("scheduler_metadata") is not None:
            raise Decline("engine_native")
        if merged.get(self.convention.version_arg, self.version_default) != 3:
            raise Decline("not_fa3")
        for name, default in self.foreign:
            value = merged.get(name, default)
            if value is not default and not _at_default(value, default):
                raise Decline(f"arg_{name}")
        if not self.plain.issuperset(merged):
            raise Decline(f"arg_{next(n for n in merged if n not in self.plain)}")  # a **kwargs pass-through
        return self.read(merged)

    def call_with_metadata(self, fn: Callable, args: tuple, kwargs: dict, metadata):
        """``fn`` called with the caller's own arguments plus ``scheduler_metadata=metadata``.

        The caller may have passed ``scheduler_metadata=None`` positionally or by keyword; that slot
        is replaced rather than given twice.
        """
        position = self.metadata_position
        if len(args) > position:
            return fn(*args[:position], metadata, *args[position + 1:], **kwargs)
        if "scheduler_metadata" in kwargs:
            return fn(*args, **{**kwargs, "scheduler_metadata": metadata})
        return fn(*args, **kwargs, scheduler_metadata=metadata)
