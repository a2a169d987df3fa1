"""``wrap(fn, provider, convention)``: a drop-in for an FA3 Python entry that shares metadata.

Per call, top to bottom: read the caller's arguments as the forward op's fields
(``Binder.fields``), derive the exact scheduling parameters (``descriptor.parameters``), check
and identify the batch tensors (``StepCache.identities``, memoised per step), build the key
(parameters + batch-tensor identity + context), take the step's metadata for that key or compute
it with the same build (``_compute``, the only place the named descriptors are built), and call
``fn`` with the caller's own arguments plus ``scheduler_metadata=``. A call that already carries
metadata goes to the ``guard`` (kept unless provably wrong for the call); a call we cannot prove
exact, and any failure of ours, pass through untouched.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

import torch

from . import context, graphs, guard, once, runtime, switches
from .cache import ComputedEvent
from .conventions import Binder, Convention
from .descriptor import AttnSignature, Decline, descriptors, parameters
from .providers import Provider, ProviderUnavailable
from .verify import verified_call

_WRAPPED_MARK = "__attn_sched_wrapped__"
# (provider name, signature, batch sizes) whose metadata FA3 refused once: never injected again. The
# derivation mirrors the forward, so a refusal means a build we do not know; keying on the exact
# parameters keeps every other batch of the signature shared (each new refusal costs one retry).
# Bounded: when full it is emptied, and a forgotten refusal costs one more refused try.
_rejected: set[tuple] = set()
MAX_REJECTED = 1024
# FA3's own checks of a supplied scheduler_metadata, as its flash_api.cpp words them: upstream and
# sgl-kernel "scheduler_metadata must have shape (metadata_size)" / "must have dtype int32" / "must be
# contiguous" / "must be on CUDA"; vLLM's stable-ABI fork "scheduler_metadata must have 1 dimensions,
# got 2" / "scheduler_metadata dimension 0 must have size 5, got 9"
_REJECTION = re.compile(r"\bscheduler_metadata (?:dimension \d+ )?must ")
# RuntimeError subclasses that are never a refusal: they propagate exactly as FA3 alone raises them
_NOT_REJECTIONS = tuple(getattr(torch, name) for name in ("OutOfMemoryError", "AcceleratorError")
                        if hasattr(torch, name))


def is_wrapped(fn) -> bool:
    return getattr(fn, _WRAPPED_MARK, False)


def wrap(fn: Callable, provider: Provider, convention: Convention) -> Callable:
    """Return ``fn`` wrapped (idempotent: a wrapped function is returned as is).

    The switches are read here, once (they are read once per process anyway), not per call:
    under ``ATTN_SCHED_DISABLE`` ``fn`` itself is returned.
    """
    if is_wrapped(fn):
        return fn
    binder = Binder(fn, convention)
    if not binder.accepts_metadata:
        raise TypeError(f"{fn!r} takes no scheduler_metadata argument; it cannot be wrapped")
    in_force = switches.current()
    if in_force.disabled:
        return fn
    verify = in_force.verify
    compiling = torch.compiler.is_compiling

    @functools.wraps(fn)
    def fa3_with_shared_metadata(*args, **kwargs):
        # under torch.compile tracing, dynamo sees exactly the original call: no graph break
        if compiling():
            return fn(*args, **kwargs)
        return _intercept(fn, binder, provider, verify, args, kwargs)

    setattr(fa3_with_shared_metadata, _WRAPPED_MARK, True)
    return fa3_with_shared_metadata


def _intercept(fn, binder: Binder, provider: Provider, verify: bool, args: tuple, kwargs: dict):
    runtime.state().tally.calls += 1
    return _share(fn, binder, provider, verify, args, kwargs)


def _share(fn, binder: Binder, provider: Provider, verify: bool, args: tuple, kwargs: dict):
    cache = runtime.state()
    tally = cache.tally
    try:
        metadata, signature, sizes, capture = _metadata_for(binder, provider, args, kwargs, cache)
    except Decline as exc:
        if exc.reason == "engine_native" and guard.enabled():
            return guard.guarded(fn, binder, provider, args, kwargs,
                                 lambda *call: _share(*call[:3], verify, *call[3:]))
        tally.passthrough[exc.reason] += 1
        return fn(*args, **kwargs)
    except Exception as exc:  # our bug must never break serving
        _log_once(f"{type(exc).__name__}: {exc}")
        tally.passthrough["plugin_error"] += 1
        return fn(*args, **kwargs)

    try:
        if verify:
            result = verified_call(lambda md: binder.call_with_metadata(fn, args, kwargs, md), metadata, tally,
                                   AttnSignature(*signature))
        else:
            result = binder.call_with_metadata(fn, args, kwargs, metadata)
    except RuntimeError as exc:
        if not is_rejection(exc):
            raise  # an OOM, a CUDA fault, any error of FA3's own: exactly as FA3 alone raises it
        # FA3 checks the metadata before launching anything: retry as FA3 alone would run
        result = fn(*args, **kwargs)
        if len(_rejected) >= MAX_REJECTED:
            _rejected.clear()
        _rejected.add((provider.name, signature, sizes))
        tally.passthrough["fa3_rejected"] += 1
        _log_once(f"FA3 rejected shared metadata for {AttnSignature(*signature)}, batch sizes {sizes}: {exc}")
        return result
    tally.injected += 1
    if capture:
        graphs.book(capture, 1)  # every replay of this graph skips this layer's prepare launch
    return result


def _metadata_for(binder: Binder, provider: Provider, args: tuple, kwargs: dict, cache) -> tuple:
    """(metadata, signature, sizes, capture id) for this call: the step's entry for its key, or a fresh
    computation.

    The key is the provider, the exact scheduling parameters, the identity of each batch tensor
    (data pointer + version counter; the entry pins the tensors, so the pointer cannot be reused
    within the step) and the context (device, stream, capture).
    """
    signature, sizes, tensors = parameters(binder.fields(args, kwargs), provider.seqlen_k_from_call)
    identities = cache.identities(sizes, tensors)
    name = provider.name
    if _rejected and (name, signature, sizes) in _rejected:
        raise Decline("fa3_rejected")
    where = context.current(tensors[0])
    if where[2] == context.UNKNOWN_CAPTURE:
        raise Decline("capture_unidentified")
    key = (name, signature, sizes, identities, where)
    metadata = cache.get(key)
    if metadata is None:
        metadata = _compute(provider, signature, sizes, tensors, key, where, cache)
    return metadata, signature, sizes, where[2]


def _compute(provider: Provider, signature: tuple, sizes: tuple, tensors: tuple, key: tuple, where: tuple, cache):
    """A cache miss: compute with the call's own build and keep it (with its batch tensors) for the step."""
    sig, batch = descriptors(signature, sizes, tensors)
    if cache.full():
        cache.entries.clear()
    try:
        metadata = provider.compute(sig, batch)
    except ProviderUnavailable as exc:
        _log_once(str(exc))
        raise Decline("provider_unavailable") from exc
    cache.put(key, metadata, tensors)
    cache.tally.computed += 1
    guard.note_size(provider.name, signature, sizes, metadata.numel())
    if where[2]:
        graphs.book(where[2], -1)  # the graph replays this metadata kernel instead
    _announce(provider, cache.tally.step, where, sig, batch, metadata)
    return metadata


def is_rejection(exc: BaseException) -> bool:
    """Whether ``exc`` is FA3 refusing a supplied ``scheduler_metadata`` (and nothing else)."""
    return not isinstance(exc, _NOT_REJECTIONS) and _REJECTION.search(str(exc)) is not None


def _announce(provider, step, where, sig, batch, metadata) -> None:
    from .plugins import notify

    notify(
        "attn_sched_metadata_computed",
        event=ComputedEvent(
            provider=provider.name, step=step, context=where, signature=tuple(sig), batch_size=batch.batch_size,
            max_seqlen_q=batch.max_seqlen_q, max_seqlen_k=batch.max_seqlen_k, page_size=batch.page_size,
            numel=metadata.numel(),
        )
    )


def _log_once(message: str) -> None:
    once.warn(f"{message}; the call passes through unchanged")
