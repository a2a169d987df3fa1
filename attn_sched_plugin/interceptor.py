"""``wrap(fn, provider, convention)``: a drop-in for an FA3 Python entry that shares metadata.

Per call: map the arguments onto the forward op's names, derive the exact scheduling
parameters, build the key (parameters + batch-tensor identity + context), take the step's
metadata for that key or compute it with the same build, and call ``fn`` with
``scheduler_metadata=``. A call that already carries metadata, a call we cannot prove exact, and
any failure of ours pass through untouched.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable

import torch

from . import context, runtime, switches
from .cache import ComputedEvent, fingerprint
from .conventions import Binder, Convention
from .descriptor import Decline, derive
from .providers import Provider, ProviderUnavailable
from .verify import verified_call

log = logging.getLogger("attn_sched_plugin")

_WRAPPED_MARK = "__attn_sched_wrapped__"
_logged_errors: set[str] = set()
# (provider, signature) pairs whose metadata FA3 refused once: never injected again
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
    cache = runtime.state()
    tally = cache.tally
    tally.calls += 1
    try:
        bound = binder.bind(args, kwargs)
        metadata, signature = _metadata_for(binder, provider, bound, cache)
    except Decline as exc:
        tally.passthrough[exc.reason] += 1
        return fn(*args, **kwargs)
    except Exception as exc:  # our bug must never break serving
        _log_once(f"{type(exc).__name__}: {exc}")
        tally.passthrough["plugin_error"] += 1
        return fn(*args, **kwargs)

    bound["scheduler_metadata"] = metadata
    tally.injected += 1
    if switches.current().verify:
        return verified_call(fn, bound, tally, signature)
    try:
        return fn(**bound)
    except RuntimeError as exc:
        # FA3 checks the metadata's size before launching anything: retry as FA3 alone would run
        bound["scheduler_metadata"] = None
        result = fn(**bound)
        _rejected.add((provider.name, signature))
        tally.injected -= 1
        tally.passthrough["fa3_rejected"] += 1
        _log_once(f"FA3 rejected shared metadata for {signature}: {exc}")
        return result


def _metadata_for(binder: Binder, provider: Provider, bound: dict, cache):
    convention = binder.convention
    if bound.get("scheduler_metadata") is not None:
        raise Decline("engine_native")
    if convention.version_arg is not None and bound.get(convention.version_arg, 3) != 3:
        raise Decline("not_fa3")
    foreign = binder.foreign_argument(bound)
    if foreign is not None:
        raise Decline(f"arg_{foreign}")
    sig, batch = derive(binder.to_op_args(bound))
    if (provider.name, sig) in _rejected:
        raise Decline("fa3_rejected")
    where = context.current(batch.seqused_k)
    if where[2] == context.UNKNOWN_CAPTURE:
        raise Decline("capture_unidentified")
    key = (
        provider.name, sig, batch.batch_size, batch.max_seqlen_q, batch.max_seqlen_k, batch.page_size,
        batch.max_seqlen_k_new, fingerprint(batch.seqused_k), fingerprint(batch.cu_seqlens_q),
        fingerprint(batch.cu_seqlens_k), fingerprint(batch.seqused_q), fingerprint(batch.leftpad_k), where,
    )
    metadata = cache.get(key)
    if metadata is None:
        if cache.full():
            cache.entries.clear()
        try:
            metadata = provider.compute(sig, batch)
        except ProviderUnavailable as exc:
            _log_once(str(exc))
            raise Decline("provider_unavailable") from exc
        cache.put(key, metadata, batch)
        cache.tally.computed += 1
        _announce(provider, cache.tally.step, where, sig, batch, metadata)
    return metadata, sig


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
