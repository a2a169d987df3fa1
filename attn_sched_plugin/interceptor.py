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
import logging
from typing import Callable

import torch

from . import context, graphs, guard, runtime, switches
from .cache import ComputedEvent
from .conventions import Binder, Convention
from .descriptor import AttnSignature, Decline, descriptors, parameters
from .providers import Provider, ProviderUnavailable
from .verify import verified_call

log = logging.getLogger("attn_sched_plugin")

_WRAPPED_MARK = "__attn_sched_wrapped__"
_logged_errors: set[str] = set()
# (provider name, signature, batch sizes) whose metadata FA3 refused once: never injected again. The
# derivation mirrors the forward, so a refusal means a build we do not know; keying on the exact
# parameters keeps every other batch of the signature shared (each new refusal costs one retry)
_rejected: set[tuple] = set()


def is_wrapped(fn) -> bool:
    return getattr(fn, _WRAPPED_MARK, False)


def wrap(fn: Callable, provider: Provider, convention: Convention) -> Callable:
    """Return ``fn`` wrapped (idempotent: a wrapped function is returned as is)."""
    if is_wrapped(fn):
        return fn
    binder = Binder(fn, convention)
    if not binder.accepts_metadata:
        raise TypeError(f"{fn!r} takes no scheduler_metadata argument; it cannot be wrapped")
    compiling = torch.compiler.is_compiling

    @functools.wraps(fn)
    def fa3_with_shared_metadata(*args, **kwargs):
        # under torch.compile tracing, dynamo sees exactly the original call: no graph break
        if compiling() or switches.current().disabled:
            return fn(*args, **kwargs)
        return _intercept(fn, binder, provider, args, kwargs)

    setattr(fa3_with_shared_metadata, _WRAPPED_MARK, True)
    return fa3_with_shared_metadata


def _intercept(fn, binder: Binder, provider: Provider, args: tuple, kwargs: dict):
    runtime.state().tally.calls += 1
    return _share(fn, binder, provider, args, kwargs)


def _share(fn, binder: Binder, provider: Provider, args: tuple, kwargs: dict):
    cache = runtime.state()
    tally = cache.tally
    try:
        metadata, signature, sizes, capture = _metadata_for(binder, provider, args, kwargs, cache)
    except Decline as exc:
        if exc.reason == "engine_native" and guard.enabled():
            return guard.guarded(fn, binder, provider, args, kwargs, _share)
        tally.passthrough[exc.reason] += 1
        return fn(*args, **kwargs)
    except Exception as exc:  # our bug must never break serving
        _log_once(f"{type(exc).__name__}: {exc}")
        tally.passthrough["plugin_error"] += 1
        return fn(*args, **kwargs)

    if switches.current().verify:
        result = verified_call(lambda md: binder.call_with_metadata(fn, args, kwargs, md), metadata, tally,
                               AttnSignature(*signature))
    else:
        try:
            result = binder.call_with_metadata(fn, args, kwargs, metadata)
        except RuntimeError as exc:
            # FA3 checks the metadata's size before launching anything: retry as FA3 alone would run
            result = fn(*args, **kwargs)
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


def _announce(provider, step, where, sig, batch, metadata) -> None:
    from .plugins import manager

    manager().hook.attn_sched_metadata_computed(
        event=ComputedEvent(
            provider=provider.name, step=step, context=where, signature=tuple(sig), batch_size=batch.batch_size,
            max_seqlen_q=batch.max_seqlen_q, max_seqlen_k=batch.max_seqlen_k, page_size=batch.page_size,
            numel=metadata.numel(),
        )
    )


def _log_once(message: str) -> None:
    if message not in _logged_errors:
        _logged_errors.add(message)
        log.warning("attn-sched: %s; the call passes through unchanged", message)
