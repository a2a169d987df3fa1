"""vLLM adapter (``vllm_targets.REQUIREMENT``): pluggy hookimpls that install attn-sched into vLLM's FA backend.

vLLM computes FA3 metadata once per attention group and step, except where it gives up (mixed
sliding windows, ``fast_build`` drafters, ``VLLM_BATCH_INVARIANT``); those calls reach FA3 with
``scheduler_metadata=None`` and FA3 launches its prepare kernel once per layer. While vLLM captures
CUDA graphs (``build_for_cudagraph_capture``), the FA3 entry each backend module calls points at
the plugin's wrapper (``routing.EntryRoute``): each captured step records one metadata kernel per
shape, replayed with no host work; calls carrying vLLM's own metadata pass through. Any other
metadata build (an eager, PIECEWISE or FULL-replay step) points it back at FA3 itself, so eager
attention runs exactly as without the plugin. The builder is hooked through vLLM's
``register_backend`` where it exists (0.13+), by patching the builder class where it does not
(0.11) or where another plugin already overrides FLASH_ATTN. Nothing from vLLM is imported until
``attn_sched_install``.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter

from attn_sched_plugin import guard, runtime, switches
from attn_sched_plugin.hookspecs import hookimpl
from attn_sched_plugin.interceptor import eager_entry, wrap
from attn_sched_plugin.patching import PatchSet
from attn_sched_plugin.providers import BUILDS, Build
from attn_sched_plugin.records import AdapterReport, EngineSupport

from . import vllm_targets as targets
from .routing import EntryRoute

ENGINE = "vllm"
FA3_BUILD = "vllm_flash_attn"
STEP_MARK = "__attn_sched_step__"

COVERED = [
    "CUDA-graph captures of FlashAttentionImpl.forward without vLLM metadata (mixed sliding windows, "
    "fast_build drafters, VLLM_BATCH_INVARIANT in 0.32+): one metadata kernel per (window, shape, num_splits) "
    "per captured step",
    "CUDA-graph captures of paged DCP and cascade calls (seqused_k) without vLLM metadata",
]
COVERED_DIFFKV = "CUDA-graph captures of FlashAttentionDiffKVImpl.forward without vLLM metadata"
ENGINE_NATIVE = [
    "FlashAttentionImpl.forward with vLLM's AOT metadata (one sliding-window config): passed through",
    "FlashAttnMLA decode (its builder computes metadata; module not wrapped)",
]
PASSED_THROUGH = {
    "eager steps (PIECEWISE attention, --enforce-eager, batches above the captured sizes)": "FA3 called "
    "untouched: sharing costs more host time there than it saves",
    "encoder attention (_forward_encoder_attention)": "varlen K (cu_seqlens_k, no seqused_k): vLLM's "
    "get_scheduler_metadata cannot describe it",
    "MLA prefill (FlashAttnPrefill / MLACommonImpl)": "varlen K (cu_seqlens_k): not describable; not wrapped",
    "sparse-MLA FA3, TurboQuant prefill, ViT/audio encoders": "own FA3 imports; varlen K; not wrapped",
    "FA2 / FA4 / ROCm / XPU": "fa_version != 3: the interceptor passes them through",
    "TRITON_FLASH_ATTN's FA3 half (multimodal prefix-LM models on Hopper)": "its builder is vLLM's own "
    "FlashAttentionMetadataBuilder, held by the composite: outside CUDA graphs for Gemma-3 (support NEVER)",
}

# said by doctor and the activation line wherever vLLM has TRITON_FLASH_ATTN (docs/coverage-vllm.md has the evidence)
NOTHING_FOR_PREFIX_LM = (
    "multimodal prefix-LM models (Gemma-3 4B/12B/27B and the other MM_PREFIX_LM_MODELS) get nothing: on Hopper "
    "vLLM runs them on TRITON_FLASH_ATTN, whose FA3 half runs eagerly (sliding layers without "
    "mm_prefix_clamp_sliding_window make its CUDA-graph support NEVER) or keeps vLLM's own metadata (no sliding "
    "layers), or on Triton alone (head dim 128, Gemma-3 27B); text-only Gemma-3 (gemma3_text) is covered"
)

_lock = threading.Lock()
_report: AdapterReport | None = None
_patches = PatchSet()  # what install changed, undone by uninstall (or by a failed install)
_routes: list = []  # routing.EntryRoute of each wrapped backend module
_native = Counter()  # vLLM-supplied metadata provably computed for other parameters, by kind


class _CaptureBuilds(threading.local):
    """``build_for_cudagraph_capture`` frames on this thread. A class default: reading a missing
    thread-local attribute costs an AttributeError (~4 us, benchmarks/results/step-hooks.json) per build."""

    depth = 0


_capture_builds = _CaptureBuilds()


def fa3_build() -> Build:
    """vLLM's FA3 build (the tests substitute the reference's)."""
    return BUILDS[FA3_BUILD]


def stepping(name: str, method):
    """``method`` (the builder's metadata build ``name``) telling the routes the phase: a capture build starts
    a captured step and routes FA3 to the wrapper; the first other build after it (eager, PIECEWISE or
    FULL-replay step, a drafter's rebuild) ends that step and routes FA3 back to FA3 itself. ``build``
    called from inside ``build_for_cudagraph_capture`` changes nothing; a build in an unchanged phase
    costs two checks."""
    capture = name == "build_for_cudagraph_capture"

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        depth = _capture_builds.depth
        if capture:
            _enter_capture()
            _capture_builds.depth = depth + 1
            try:
                return method(self, *args, **kwargs)
            finally:
                _capture_builds.depth = depth
        if not depth:
            if _phase.captured:
                _leave_capture()
            if _routes and _routes[0].verify:  # ATTN_SCHED_VERIFY: eager builds go through the wrapper
                for route in _routes:
                    route.eager()
        return method(self, *args, **kwargs)

    setattr(run, STEP_MARK, True)
    return run


class _Phase:
    captured = False  # a capture build ran and no other build since: the routes point at the wrapper


_phase = _Phase()


def _enter_capture() -> None:
    runtime.new_step()
    _phase.captured = True
    for route in _routes:
        route.capture()


def _leave_capture() -> None:
    """End the captured step, then release the routes.

    vLLM rewrites batch tensors in place between FA3 calls only before a rebuild of its own metadata
    (the drafters' ``seq_lens`` Triton kernels, then ``build_for_drafting`` / ``update_draft_decode_metadata``:
    docs/coverage-vllm.md). Such writes leave the version counter as it was, so the step must end here,
    not only the route: metadata from before the write is then never reused, not even through an
    entry another plugin rebound after us (which ``release`` leaves in place).
    """
    _phase.captured = False
    runtime.new_step()
    for route in _routes:
        route.release()


def native_mismatch(kw: dict) -> str | None:
    """Why vLLM's own ``scheduler_metadata`` in this FA3 call was computed for other parameters.

    vLLM's builder calls ``get_scheduler_metadata`` with ``headdim`` only (no ``headdim_v``) and no
    ``has_softcap``, while FA3's forward takes ``headdim_v`` from ``v`` and softcap from the call.
    (Its ``max_seqlen_k`` agrees: vLLM's fork of FA3 schedules with the call's live maximum, which
    is what the builder passes.)
    """
    if kw.get("scheduler_metadata") is None or kw.get("fa_version", 3) != 3:
        return None
    q, v = kw.get("q"), kw.get("v")
    if kw.get("q_v") is None and v is not None and q is not None and v.shape[-1] != q.shape[-1]:
        return "headdim_v"
    if (kw.get("softcap") or 0.0) > 0.0:
        return "has_softcap"
    return None


@hookimpl
def attn_sched_engine_counters() -> dict[str, dict[str, int]]:
    counters = {**{f"native_metadata_{kind}": n for kind, n in _native.items()},
                **guard.counts(fa3_build().provider.name)}
    return {ENGINE: counters} if counters else {}


def _checking(fn):
    """``fn`` preceded by the ``native_mismatch`` check (vLLM passes every argument by keyword); it runs
    only while graphs are captured, as the whole wrapper does."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if kwargs.get("scheduler_metadata") is not None:
            reason = native_mismatch(kwargs)
            if reason is not None:
                _native[reason] += 1
        return fn(*args, **kwargs)

    return call


def _route_entries(plan: targets.Plan) -> list[str]:
    build = fa3_build()
    mode = switches.current().guard
    done = []
    for module, attr in plan.entries:
        fn = getattr(module, attr)
        eager = eager_entry(fn, build) if mode == "always" else None
        routes = [EntryRoute(module, attr, _checking(wrap(fn, build)), eager)]
        recorded = module.__dict__.get(targets.METADATA_ENTRY)
        if mode != "off" and recorded is not None:  # the guard's record of vLLM's own computations
            recorder = guard.recording(recorded)
            routes.append(EntryRoute(module, targets.METADATA_ENTRY, recorder, recorder if eager else None))
        for route in routes:
            route.release()  # ATTN_SCHED_GUARD=always: eager steps reach the guard's entry from the start
            _routes.append(route)
            _patches.on_undo(lambda r=route: (r.restore(), _routes.remove(r)))
            done.append(f"{module.__name__}.{route.attr} (routed)")
    return done


def _patch_builder(builder: type) -> list[str]:
    done = []
    for name in targets.STEP_METHODS:
        method = getattr(builder, name, None)
        if method is not None and not getattr(method, STEP_MARK, False):
            _patches.set(builder, name, stepping(name, method))
            done.append(f"{builder.__module__}.{builder.__qualname__}.{name}")
    store = builder.__dict__.get(targets.STORE_METHOD)
    if store is not None:
        _patches.set(builder, targets.STORE_METHOD, guard.following(store))
        done.append(f"{builder.__module__}.{builder.__qualname__}.{targets.STORE_METHOD}")
    return done


def _register(plan: targets.Plan) -> list[str] | None:
    """Our backends through ``register_backend``; None when another plugin overrides FLASH_ATTN."""
    enum = plan.registry.AttentionBackendEnum
    if enum.FLASH_ATTN.is_overridden():
        return None
    done = []
    for name, path in plan.overrides.items():
        member = enum[name]
        if member.is_overridden():
            continue
        plan.registry.register_backend(member, class_path=path)
        _patches.on_undo(lambda m=member, p=path: m.clear_override() if m.get_path() == p else None)
        done.append(f"register_backend({name}) -> {path}")
    return done


def _declined(version: str, reason: str) -> AdapterReport:
    return AdapterReport(engine=ENGINE, version=version, fa3_build=FA3_BUILD, active=False, reason=reason)


@hookimpl
def attn_sched_discover() -> list[EngineSupport]:
    version = targets.installed_version()
    if version is None:
        return [EngineSupport(ENGINE, None, False, "vllm is not installed", FA3_BUILD)]
    try:
        known = targets.is_known(version)
    except targets.Unsupported as exc:
        return [EngineSupport(ENGINE, version, False, str(exc), FA3_BUILD)]
    if not known:
        reason = (f"not in {targets.REQUIREMENT.specifier} (the checked releases): patched only if every target "
                  "resolves with the expected signature")
    else:
        reason = NOTHING_FOR_PREFIX_LM if targets.has_composite_fa3() else ""
    return [EngineSupport(ENGINE, version, known, reason, FA3_BUILD)]


@hookimpl
def attn_sched_install(engine: str) -> AdapterReport | None:
    global _report
    if engine != ENGINE:
        return None
    with _lock:
        if _report is not None and _report.active:
            return _report
        version = targets.installed_version()
        if version is None:
            return _declined("none", "vllm is not installed")
        try:
            plan = targets.resolve(version)
        except (targets.Unsupported, ImportError) as exc:
            return _declined(version, str(exc))
        with _patches:  # a failure undoes what was done so far, then propagates
            wrapped = _route_entries(plan)
            registered = _register(plan) if plan.registry is not None else None
            wrapped += registered if registered is not None else _patch_builder(plan.builder)
        covered = COVERED + ([COVERED_DIFFKV] if len(plan.entries) > 1 else [])
        _report = AdapterReport(engine=ENGINE, version=version, fa3_build=FA3_BUILD, active=True, covered=covered,
                                engine_native=list(ENGINE_NATIVE), passed_through=dict(PASSED_THROUGH),
                                wrapped=wrapped, note=NOTHING_FOR_PREFIX_LM if targets.has_composite_fa3() else "")
        return _report


@hookimpl
def attn_sched_uninstall(engine: str) -> None:
    global _report
    if engine != ENGINE:
        return
    with _lock:
        _patches.undo()
        _phase.captured = False
        _report = None
