"""The guard on engine-supplied ``scheduler_metadata``: metadata an engine computed for other
parameters than the FA3 call consuming it is replaced before it reaches FA3.

FA3's forward re-derives its scheduling parameters from its own arguments and checks only the size
of supplied metadata; both engines have shipped metadata computed for another window,
``max_seqlen_k``, ``num_splits`` or size (docs/engine-metadata-guard.md lists the issues). For a
call carrying engine metadata the guard derives what the forward derives (``descriptor.parameters``
with the build's seqlen rule) and proves a mismatch from

* the parameters recorded at the engine's own ``get_scheduler_metadata`` call (``recording``;
  ``following`` carries a record onto the engine's copy in its persistent buffer), compared after
  FA3's own window / causal normalisation;
* the size: this build's metadata for the same parameters had another size (``note_size``);
* FA3 itself: the forward refused it (its size check runs before anything is launched).

A proven mismatch gets exact metadata through the normal per-step cache (or none, so FA3 schedules
itself, where none can be derived), is counted by reason and logged once naming the engine issue
class. Whatever is not proven passes unchanged. The guard runs where the interceptor runs: inside
CUDA-graph captures (free at replay); in eager steps too with ``ATTN_SCHED_GUARD=always``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Callable

import torch

from . import activation, once, runtime, switches
from .binding import Binder
from .descriptor import AttnSignature, parameters
from .errors import Decline, is_rejection

log = logging.getLogger("attn_sched_plugin")

# reason -> the engine issue class its log line names
ISSUE_CLASSES = {
    "window": "vLLM #54374 / GPT-OSS SWA-class: metadata computed for another window",
    "max_seqlen_k": "SGLang #30439-class: metadata computed for another max_seqlen_k (the live maximum, not "
                    "the span the forward derives)",
    "num_splits": "vLLM #20301-class: metadata computed for another num_splits",
    "headdim_v": "vLLM DiffKV-class: metadata computed without the call's headdim_v",
    "has_softcap": "metadata computed without the call's softcap",
    "size": "SGLang #22800 / vLLM #48221-class: metadata of another size than the forward expects",
    "fa3_refused": "SGLang #22800 / vLLM #48221-class: FA3 refused the engine's metadata (its size check)",
}
# compared in this order; the first difference names the reason
FIELDS = ("window", "max_seqlen_k", "num_splits", "headdim_v", "has_softcap", "batch_size", "max_seqlen_q",
          "num_heads", "num_heads_k", "headdim", "qkv_dtype", "pack_gqa", "sm_margin", "page_size",
          "max_seqlen_k_new")
_ENGINE_NAMES = {"num_heads_q": "num_heads", "num_heads_kv": "num_heads_k"}


def enabled() -> bool:
    return switches.current().guard != "off"


# --- what the forward derives, and what the engine's metadata was computed for -------------------

def _scheduled(p: dict) -> dict:
    """``p`` with its window and causal flag as FA3 normalises them (mha_fwd, get_scheduler_metadata)."""
    s_q, s_k, chunk = p["max_seqlen_q"], p["max_seqlen_k"], p.pop("attention_chunk")
    left, right, causal = p.pop("window_left"), p.pop("window_right"), p.pop("is_causal")
    left = -1 if left >= s_k - 1 else left
    right = -1 if right >= s_q - 1 else right
    if s_q == 1 and left == -1 and right == -1 and chunk == 0 and (
            p["headdim"] <= 64 or p["headdim"] > 128 or p["page_size"] is None):
        causal = False
    if causal:
        right = 0
    is_causal = left < 0 and right == 0 and chunk == 0
    is_local = (left >= 0 or right >= 0 or chunk >= 1) and not is_causal
    p["window"] = (is_causal, is_local, left, right, chunk)
    return p


def call_parameters(signature: tuple, sizes: tuple) -> dict:
    """The scheduling parameters of a forward call (``descriptor.parameters``' tuples), normalised."""
    sig = AttnSignature(*signature)
    batch_size, max_seqlen_q, max_seqlen_k, page_size, max_seqlen_k_new = sizes
    return _scheduled(dict(
        batch_size=batch_size, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, page_size=page_size,
        max_seqlen_k_new=max_seqlen_k_new, num_heads=sig.num_heads, num_heads_k=sig.num_heads_k,
        headdim=sig.headdim, headdim_v=sig.headdim_v, qkv_dtype=sig.qkv_dtype, is_causal=sig.is_causal,
        window_left=sig.window_size_left, window_right=sig.window_size_right, attention_chunk=sig.attention_chunk,
        has_softcap=sig.has_softcap, num_splits=sig.num_splits, pack_gqa=sig.pack_gqa, sm_margin=sig.sm_margin,
    ))


def engine_parameters(arguments: dict) -> dict:
    """The parameters of an engine's ``get_scheduler_metadata`` call (its bound arguments), normalised."""
    a = {_ENGINE_NAMES.get(name, name): value for name, value in arguments.items()}
    left, right = a.get("window_size") or (-1, -1)
    return _scheduled(dict(
        batch_size=a["batch_size"], max_seqlen_q=a["max_seqlen_q"], max_seqlen_k=a["max_seqlen_k"],
        page_size=a.get("page_size"), max_seqlen_k_new=a.get("max_seqlen_k_new") or 0, num_heads=a["num_heads"],
        num_heads_k=a["num_heads_k"], headdim=a["headdim"], headdim_v=a.get("headdim_v") or a["headdim"],
        qkv_dtype=a.get("qkv_dtype"), is_causal=bool(a.get("causal")), window_left=int(left),
        window_right=int(right), attention_chunk=a.get("attention_chunk") or 0,
        has_softcap=bool(a.get("has_softcap")), num_splits=a.get("num_splits") or 0, pack_gqa=a.get("pack_gqa"),
        sm_margin=a.get("sm_margin") or 0,
    ))


def first_difference(engine: dict, call: dict) -> str | None:
    return next((name for name in FIELDS if engine[name] != call[name]), None)


# --- records of the engine's own computations (kept in ``activation.PROCESS.guard``) ----------------

def recording(fn: Callable, armed: Callable[[], bool] = lambda: True) -> Callable:
    """``fn`` (an engine's ``get_scheduler_metadata``) recording, while ``armed()``, the parameters each
    result was computed for."""
    names = inspect.signature(fn)

    @functools.wraps(fn)
    def get_scheduler_metadata_recorded(*args, **kwargs):
        metadata = fn(*args, **kwargs)
        if armed():
            try:
                bound = names.bind(*args, **kwargs)
                bound.apply_defaults()
                activation.PROCESS.guard.record(metadata, engine_parameters(bound.arguments))
            except Exception as exc:  # an unreadable call is simply not recorded
                _log_once(f"get_scheduler_metadata call not recorded ({type(exc).__name__}: {exc})")
        return metadata

    return get_scheduler_metadata_recorded


def following(method: Callable) -> Callable:
    """``method(self, metadata)`` (an engine copying its metadata into a persistent buffer and returning
    the copy, e.g. vLLM's ``_store_scheduler_metadata``) carrying the record onto the copy."""

    @functools.wraps(method)
    def store(self, metadata, *args, **kwargs):
        stored = method(self, metadata, *args, **kwargs)
        if stored is not metadata and isinstance(metadata, torch.Tensor) and isinstance(stored, torch.Tensor):
            try:
                records = activation.PROCESS.guard
                found = records.parameters_of(metadata)
                if found is not None:
                    records.record(stored, found)
            except Exception as exc:
                _log_once(f"metadata copy not followed ({type(exc).__name__}: {exc})")
        return stored

    return store


def note_size(provider: str, signature: tuple, sizes: tuple, numel: int) -> None:
    """This build's metadata for these parameters has ``numel`` entries (the interceptor computed it)."""
    activation.PROCESS.guard.note_size((provider, signature, sizes), numel)


# --- the check, per call carrying engine metadata ---------------------------------------------------

def _split(binder: Binder, args: tuple, kwargs: dict) -> tuple:
    """(the engine's metadata, the call's arguments without it)."""
    position = binder.metadata_position
    if len(args) > position:
        return args[position], args[:position] + (None,) + args[position + 1:], kwargs
    return kwargs.get("scheduler_metadata"), args, {**kwargs, "scheduler_metadata": None}


def mismatch(binder: Binder, provider, args: tuple, kwargs: dict) -> tuple | None:
    """(reason, args, kwargs without the engine's metadata) when it provably does not fit this call."""
    metadata, bare_args, bare_kwargs = _split(binder, args, kwargs)
    if not isinstance(metadata, torch.Tensor):
        return None
    try:
        signature, sizes, _ = parameters(binder.fields(bare_args, bare_kwargs), provider.seqlen_k_from_call)
    except Decline:
        return None  # not derivable: nothing to prove against
    records = activation.PROCESS.guard
    expected = records.size((provider.name, signature, sizes))
    if expected is not None and expected != metadata.numel():
        return "size", bare_args, bare_kwargs
    recorded = records.parameters_of(metadata)
    reason = None if recorded is None else first_difference(recorded, call_parameters(signature, sizes))
    return None if reason is None else (reason, bare_args, bare_kwargs)


def guarded(fn: Callable, binder: Binder, provider, args: tuple, kwargs: dict, exact: Callable):
    """A call carrying engine metadata: ``exact(fn, binder, provider, args, kwargs)`` (the interceptor's
    path) on the call without it where it provably does not fit, else the call as it is."""
    try:
        verdict = mismatch(binder, provider, args, kwargs)
    except Exception as exc:  # our bug must never break serving: the call as without the guard
        _log_once(f"{type(exc).__name__}: {exc}")
        verdict = None
    if verdict is not None:
        reason, bare_args, bare_kwargs = verdict
        _count(provider.name, reason)
        return exact(fn, binder, provider, bare_args, bare_kwargs)
    runtime.state().tally.passthrough["engine_native"] += 1
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:
        if not is_rejection(exc):
            raise  # an OOM, a CUDA fault: exactly as FA3 alone raises it
        # FA3 checks the metadata's size before launching anything: run as FA3 alone would
        _, bare_args, bare_kwargs = _split(binder, args, kwargs)
        result = fn(*bare_args, **bare_kwargs)
        _count(provider.name, "fa3_refused", f" ({exc})")
        return result


# --- counters ---------------------------------------------------------------------------------------

def _count(provider: str, reason: str, detail: str = "") -> None:
    if activation.PROCESS.guard.count(provider, reason):
        log.warning("attn-sched: guard: %s%s; the call runs with exact metadata of FA3 build %s (or none)",
                    ISSUE_CLASSES.get(reason, f"metadata computed for another {reason}"), detail, provider)


def counts(provider: str) -> dict[str, int]:
    """Calls of ``provider``'s build whose engine metadata the guard replaced, as ``guard_<reason>``."""
    return activation.PROCESS.guard.counts(provider)


def _log_once(message: str) -> None:
    once.warn(f"guard: {message}; engine metadata left as it is")
