"""``wrap(fn, build)``: a drop-in for an FA3 Python entry that shares metadata.

Per call, top to bottom: read the caller's arguments as the forward op's fields
(``Binder.fields``), derive the exact scheduling parameters (``descriptor.parameters``), check
and identify the batch tensors (``StepCache.identities``, memoised per step), build the key
(parameters + batch-tensor identity + context), take the step's metadata for that key or compute
it with the same build (``_compute``: the plain tuples go to the op as they are; in a capture, kept in
the capture's arena, ``arena.py``), and call ``fn`` with the caller's own arguments plus
``scheduler_metadata=``. A call that already carries metadata goes to the ``guard`` (kept unless
provably wrong for the call); a call we cannot prove exact, and any failure of ours, pass through
untouched. ``eager_entry`` is the guard's way in for
eager steps (``ATTN_SCHED_GUARD=always``).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from . import activation, context, guard, once, runtime, switches
from .binding import Binder
from .descriptor import AttnSignature, parameters
from .errors import Decline, ProviderUnavailable, is_rejection
from .hookspecs import ComputedEvent
from .providers import Build, Provider
from .verify import verified_call

_WRAPPED_MARK = "__attn_sched_wrapped__"


def is_wrapped(fn) -> bool:
    return getattr(fn, _WRAPPED_MARK, False)


def wrap(fn: Callable, build: Build) -> Callable:
    """Return ``fn``, an entry of ``build`` called through its convention, wrapped (idempotent: a
    wrapped function is returned as is).

    The build's parts and the switches are read here, once (the switches are read once per process
    anyway), not per call: under ``ATTN_SCHED_DISABLE`` ``fn`` itself is returned.
    """
    if is_wrapped(fn):
        return fn
    provider = build.provider
    binder = Binder(fn, build.convention)
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


def eager_entry(fn: Callable, build: Build) -> Callable:
    """What eager steps call with ``ATTN_SCHED_GUARD=always``: ``fn`` itself unless the call carries
    engine metadata, which goes through the interceptor (and so the guard)."""
    if switches.current().disabled:  # read once, as ``wrap`` does
        return fn
    provider = build.provider
    binder = Binder(fn, build.convention)
    position = binder.metadata_position
    compiling = torch.compiler.is_compiling

    @functools.wraps(fn)
    def fa3_guarded(*args, **kwargs):
        metadata = args[position] if len(args) > position else kwargs.get("scheduler_metadata")
        if metadata is None or compiling():
            return fn(*args, **kwargs)
        return _intercept(fn, binder, provider, False, args, kwargs)

    return fa3_guarded


def _intercept(fn, binder: Binder, provider: Provider, verify: bool, args: tuple, kwargs: dict):
    cache = runtime.state()  # once per call: the guard's retry below is in the same step
    cache.tally.calls += 1
    return _share(fn, binder, provider, verify, args, kwargs, cache)


def _share(fn, binder: Binder, provider: Provider, verify: bool, args: tuple, kwargs: dict, cache):
    tally = cache.tally
    try:
        metadata, signature, sizes, capture = _metadata_for(binder, provider, args, kwargs, cache)
    except Decline as exc:
        if exc.reason == "engine_native" and guard.enabled():
            return guard.guarded(fn, binder, provider, args, kwargs,
                                 lambda *call: _share(*call[:3], verify, *call[3:], cache))
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
        activation.PROCESS.reject((provider.name, signature, sizes))
        tally.passthrough["fa3_rejected"] += 1
        _log_once(f"FA3 rejected shared metadata for {AttnSignature(*signature)}, batch sizes {sizes}: {exc}")
        return result
    tally.injected += 1
    if capture:
        activation.PROCESS.graphs.book(capture, 1)  # every replay of this graph skips this layer's prepare launch
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
    rejected = activation.PROCESS.rejected
    if rejected and (name, signature, sizes) in rejected:
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
    try:
        metadata = provider.compute(signature, sizes + tensors)
    except ProviderUnavailable as exc:
        _log_once(str(exc))
        raise Decline("provider_unavailable") from exc
    if where[2]:
        metadata = activation.PROCESS.graphs.keep(where[2], metadata)  # out of the graph's pool (arena.py)
        activation.PROCESS.graphs.book(where[2], -1)  # the graph replays this metadata kernel instead
    cache.put(key, metadata, tensors)
    cache.tally.computed += 1
    guard.note_size(provider.name, signature, sizes, metadata.numel())
    _announce(provider, cache.tally.step, where, signature, sizes, metadata)
    return metadata


def _announce(provider, step, where, signature, sizes, metadata) -> None:
    batch_size, max_seqlen_q, max_seqlen_k, page_size, _ = sizes
    activation.PROCESS.hooks.notify(
        "attn_sched_metadata_computed",
        event=ComputedEvent(
            provider=provider.name, step=step, context=where, signature=signature, batch_size=batch_size,
            max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, page_size=page_size, numel=metadata.numel(),
        )
    )


def _log_once(message: str) -> None:
    once.warn(f"{message}; the call passes through unchanged")
