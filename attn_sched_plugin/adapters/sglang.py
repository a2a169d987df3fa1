"""SGLang adapter: FA3 scheduler metadata shared across the layers of every captured CUDA graph.

SGLang's metadata callbacks of ``FlashAttentionBackend`` tell the phase: a capture callback starts
a captured step, a replay or eager callback ends the capture phase. While graphs are captured,
the backend module's FA3 entry points at the plugin's wrapper (``routing.EntryRoute``): each
captured step records one metadata kernel per shape, replayed with no host work. Eager steps call
FA3 untouched and, in ``replace`` mode, keep SGLang's own eager decode precompute; SGLang's
replay-time precompute (host work every decode step) is what ``replace`` removes. Every callback
hook goes through SGLang's own ``HookRegistry`` and is undone by ``attn_sched_uninstall``. Nothing
is imported from SGLang at module import time.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Callable

from .. import guard, interceptor, runtime, switches
from ..hookspecs import hookimpl
from ..patching import PatchSet
from ..providers import BUILDS, Build
from ..records import AdapterReport, EngineSupport
from . import packages
from . import sglang_targets as targets
from .routing import EntryRoute

ENGINE = "sglang"
FA3_BUILD = "sgl_kernel"
log = logging.getLogger("attn_sched_plugin")

# what the adapter covers, by call path of FlashAttentionBackend (see docs/coverage-sglang.md)
COVERED = [
    "CUDA-graph decode: SWA layers, local/chunked attention, cross-attention",
    "CUDA-graph draft decode (topk<=1 every draft step; topk>1 normal and expand parts)",
    "CUDA-graph target verify and draft extend, MLA decode (qv)",
]
DEFAULT_DECODE = "CUDA-graph decode: non-SWA, non-MLA (no speculation)"
PASSED_THROUGH = {
    "eager steps (prefill/extend, --disable-cuda-graph, batches above the captured sizes)": "FA3 called "
    "untouched: sharing costs more host time there than it saves (SGLang's own eager decode precompute stays)",
    "flash_attn_varlen_func (3 extend paths)": "SGLang's FA3 varlen wrapper hard-codes scheduler_metadata=None",
    "fa_impl_ver=4 (FA4)": "not FA3 (ver != 3)",
    "DP attention / prefill context parallelism": "SGLang's guard respected: backend disables metadata sharing",
    "FA3 calls outside FlashAttentionBackend (dsa, minicpm, dual-chunk)": "other modules: not routed",
}


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.active = False
        self.report: AdapterReport | None = None
        self.patches = PatchSet()  # our hooks, undone by uninstall
        self.targets: list[str] = []  # the methods they wrap, for the report
        self.route: EntryRoute | None = None
        self.recorder: EntryRoute | None = None  # sgl_kernel's get_scheduler_metadata, recorded for the guard
        self.build: Build | None = None  # sgl_kernel's (tests give the reference's)
        self.eager = True  # the phase: eager until a capture callback, again from the next eager callback
        self.captured = False  # the route points at the wrapper: a capture callback ran, no replay/eager since
        self.passed_through = False  # a captured step passed calls through ("replace" keeps SGLang's precompute)


_state = _State()


# --- hooks on SGLang's metadata callbacks (once per step, never per layer) -------------------------

def _capture_step(self, *args, **kwargs) -> None:
    """A graph is about to be captured for this backend: its FA3 calls share metadata from here."""
    if _state.active:
        if _state.captured:
            _end_captured_step()
        runtime.new_step()
        _state.eager = False
        _state.captured = not getattr(self, "_disable_scheduler_metadata_precompute", False)
        if _state.captured:
            _state.route.capture()
        else:
            _state.route.release()  # DP attention / prefill CP: SGLang's guard against shared metadata


def _captured_run(self, *args, **kwargs) -> None:
    """``init_forward_metadata_in_graph``: the captured run starts (warm-up metadata is dropped)."""
    if _state.active:
        runtime.new_step()


def _replay_step(self, *args, **kwargs) -> None:
    if _state.active:
        if _state.captured:
            _leave_capture()
        _state.eager = False


def _eager_step(self, *args, **kwargs) -> None:
    if _state.active:
        if _state.captured:
            _leave_capture()
        _state.eager = True
        if _state.route.verify and not getattr(self, "_disable_scheduler_metadata_precompute", False):
            _state.route.eager()  # ATTN_SCHED_VERIFY: eager calls compared (SGLang's guard respected)


def _leave_capture() -> None:
    """The first replay or eager callback after captures: end the captured step, release the route.

    Ending the step (not only the route) means no metadata from a capture is reused after SGLang's
    next metadata writes (sgl_kernel/Triton kernels leave the version counter as it was), not even
    through an entry another plugin rebound after us. Later callbacks in the same phase do nothing.
    """
    _end_captured_step()
    _state.captured = False
    runtime.new_step()
    _state.route.release()


def _out_graph_step(self, forward_batch, in_capture=False, *args, **kwargs) -> None:
    """``init_forward_metadata_out_graph`` (0.5.13+): before a capture, or before every replay."""
    (_capture_step if in_capture else _replay_step)(self)


# the hook of each metadata callback, by SGLang's method name (sglang_targets.ERAS lists them per era)
CALLBACK_HOOKS = {
    "init_forward_metadata": _eager_step,
    "init_forward_metadata_capture_cuda_graph": _capture_step,
    "init_forward_metadata_replay_cuda_graph": _replay_step,
    "init_forward_metadata_out_graph": _out_graph_step,
    "init_forward_metadata_in_graph": _captured_run,
}


def _no_precompute(original_fn, self, *args, **kwargs):
    """AROUND SGLang's decode precompute in "replace" mode: skipped only in a capture our wrapper serves.

    Its result is captured into the graph, and SGLang recomputes it at replay only where the capture
    kept it (``metadata.scheduler_metadata is not None``), so replays follow the capture's choice.
    Kept wherever the decode calls would reach FA3 without our metadata: the route is not ours
    (released, or rebound by someone else), the switch is off, this batch size is torch-compiled
    (dynamo sees FA3 itself), or an earlier captured step passed calls through (a decline or a
    rejection, which this capture would repeat).
    """
    if _state.active and _state.route.capturing and _serves(args[0] if args else kwargs.get("batch_size")):
        return None
    return original_fn(self, *args, **kwargs)


def _serves(batch_size) -> bool:
    if switches.current().disabled or _state.passed_through or not isinstance(batch_size, int):
        return False
    compiled = targets.torch_compile_max_bs()
    return compiled is not None and batch_size > compiled


def _end_captured_step() -> None:
    """A captured step ends: a pass-through in it keeps SGLang's precompute from now on."""
    if not _state.passed_through and runtime.state().tally.passthrough:
        _state.passed_through = True
        log.warning("attn-sched: captured FA3 calls passed through (%s); SGLang's own decode precompute is "
                    "kept for the graphs captured from now on", dict(runtime.state().tally.passthrough))


# --- pluggy hooks ----------------------------------------------------------------------------------

@hookimpl
def attn_sched_discover() -> list[EngineSupport]:
    version = targets.installed_version()
    if version is None:
        return [EngineSupport(ENGINE, None, False, "sglang is not installed", FA3_BUILD)]
    reason = _version_reason(version)
    return [EngineSupport(ENGINE, version, reason is None, reason or "", FA3_BUILD)]


@hookimpl
def attn_sched_engine_counters() -> dict[str, dict[str, int]]:
    counters = guard.counts(_state.build.provider.name) if _state.build is not None else {}
    return {ENGINE: counters} if counters else {}


@hookimpl
def attn_sched_install(engine: str) -> AdapterReport | None:
    return install() if engine == ENGINE else None


@hookimpl
def attn_sched_uninstall(engine: str) -> None:
    if engine == ENGINE:
        uninstall()


# --- install / uninstall ---------------------------------------------------------------------------

def _version_reason(version: str) -> str | None:
    try:
        parsed = targets.parse(version)
    except packages.UnreadableVersion as exc:
        return str(exc)
    if targets.era_for(parsed) is None:
        return f"sglang {version} predates plugin discovery and HookRegistry (needs {targets.REQUIREMENT})"
    return None


def _decline(version: str, reason: str) -> AdapterReport:
    return AdapterReport(ENGINE, version, "", False, reason=reason)


def install(build: Build | None = None) -> AdapterReport:
    """Patch SGLang in this process (idempotent). ``build`` replaces sgl_kernel's (tests)."""
    with _state.lock:
        if _state.active:
            return _state.report
        version = targets.installed_version()
        if version is None:
            return _decline("", "sglang is not installed")
        reason = _version_reason(version) or _environment_reason()
        if reason:
            return _decline(version, reason)
        release = targets.parse(version)
        era = targets.era_for(release)
        mode = switches.current().sglang_mode
        problems = _check_targets(era, mode)
        if problems:
            newer = not packages.checked(targets.REQUIREMENT, release)
            why = ("sglang {} is newer than the newest checked release; " if newer else "sglang {}: ").format(version)
            why += "; ".join(problems) + "; nothing patched"
            log.warning("attn-sched: %s", why)
            return _decline(version, why)
        backend_module = sys.modules[targets.resolve(targets.BACKEND).__module__]
        _state.build = build = build or BUILDS[FA3_BUILD]
        entry = backend_module.flash_attn_with_kvcache
        always = switches.current().guard == "always"
        route = EntryRoute(backend_module, "flash_attn_with_kvcache", interceptor.wrap(entry, build),
                           interceptor.eager_entry(entry, build) if always else None)
        applied: list[str] = []
        ours = PatchSet()
        try:  # SGLang must be left exactly as it was: a failure undoes each hook applied, ours and the early ones
            with PatchSet() as early, ours:
                _apply_all(era, mode, applied, early, ours)
        except Exception as exc:  # noqa: BLE001
            why = (f"sglang {version}: patching failed midway ({type(exc).__name__}: {exc}); the "
                   f"{len(applied)} hook(s) applied before were undone, nothing patched")
            log.warning("attn-sched: %s", why)
            return _decline(version, why)
        _state.route, _state.patches, _state.targets = route, ours, applied
        route.release()  # ATTN_SCHED_GUARD=always: eager steps reach the guard's entry from the start
        _state.recorder = _recorder(always) if guard.enabled() else None
        _state.eager, _state.captured, _state.passed_through = True, False, False
        _state.active = True
        _state.report = _report(version, mode)
        return _state.report


def _recorder(always: bool) -> EntryRoute | None:
    """sgl_kernel's ``get_scheduler_metadata`` recording for the guard (armed in captured steps, and in
    eager ones with ``always``). Each backend binds it in ``__init__``, after ``load_plugins``, so it
    is replaced for the whole process; a call costs one flag test when disarmed."""
    try:
        import sgl_kernel.flash_attn as module
    except ImportError:
        return None
    if getattr(module, "get_scheduler_metadata", None) is None:
        return None
    route = EntryRoute(module, "get_scheduler_metadata",
                       guard.recording(module.get_scheduler_metadata, lambda: always or not _state.eager))
    route.capture()
    return route


def _environment_reason() -> str | None:
    """Why patching here would be wrong (another FA3 build, or CUDA would be initialised), or None."""
    import torch

    if "sgl_kernel" not in sys.modules and not torch.cuda.is_initialized():
        return ("sgl_kernel is not imported in this process yet; importing SGLang's FA3 backend now would "
                "initialise CUDA (sgl_kernel queries the device at import). SGLang's processes import it "
                "before load_plugins(), so this only happens when load_plugins() runs standalone")
    from sglang.srt.environ import envs

    flag = getattr(envs, "SGLANG_USE_SGL_FA3_KERNEL", None)
    if flag is not None and not flag.get():
        return ("SGLANG_USE_SGL_FA3_KERNEL=0 loads FA3 from a hub kernel, whose metadata layout need not "
                "match sgl_kernel's get_scheduler_metadata")
    return None


def _check_targets(era: targets.Era, mode: str) -> list[str]:
    """Every target must resolve with the expected signature, else nothing is patched."""
    problems = []
    try:
        entry = targets.resolve(era.fa3_entry)
        backend_cls = targets.resolve(targets.BACKEND)
    except (ImportError, AttributeError, ValueError) as exc:
        return [f"cannot resolve a target ({type(exc).__name__}: {exc})"]
    if (why := targets.check_fa3_entry(entry)) is not None:
        problems.append(f"{era.fa3_entry}: {why}")
    module = sys.modules[backend_cls.__module__]
    if getattr(module, "flash_attn_with_kvcache", None) is not entry:
        problems.append(f"{backend_cls.__module__} does not call {era.fa3_entry}")
    for name, leading in targets.method_targets(era, mode).items():
        fn = backend_cls.__dict__.get(name)
        why = "missing" if fn is None else targets.check_params(fn, leading)
        if why is not None:
            problems.append(f"{targets.BACKEND}.{name}: {why}")
    return problems + targets.check_hook_registry()


def _apply_all(era: targets.Era, mode: str, applied: list[str], early: PatchSet, ours: PatchSet) -> None:
    """Apply every hook, appending each target to ``applied`` as its hook lands."""
    from sglang.srt.plugins.hook_registry import HookType

    plan = [(f"{targets.BACKEND}.{name}", HookType.BEFORE, CALLBACK_HOOKS[name]) for name in era.callbacks]
    if mode == "replace":
        plan.append((f"{targets.BACKEND}.{targets.PRECOMPUTE[0]}", HookType.AROUND, _no_precompute))
    for target, hook_type, hook in plan:
        _apply(target, hook_type, hook, early, ours)
        applied.append(target)


def _current(owner, attr: str):
    return owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr)


def _apply(target: str, hook_type, hook: Callable, early: PatchSet, ours: PatchSet) -> None:
    """Register ``hook`` and apply it now, as the outermost layer of ``target``.

    Hooks other plugins registered on the same target but HookRegistry has not applied yet are
    applied first, exactly as ``apply_hooks`` would, into ``early`` (undone only by a failed install:
    after it they stay, as HookRegistry would have applied them); ours then wraps them, into ``ours``,
    so uninstall peels ours off alone. Applying now (not at the end of ``load_plugins``) keeps the
    report truthful.
    """
    import pkgutil

    from sglang.srt.plugins.hook_registry import HookRegistry

    owner_path, attr = target.rsplit(".", 1)
    owner = pkgutil.resolve_name(owner_path)
    marked, listed = target not in HookRegistry._patched, target in HookRegistry._hooks
    ours.on_undo(lambda: _unregister(target, hook, marked, listed))
    HookRegistry.register(target, hook, hook_type)
    entry = HookRegistry._hooks[target][-1]
    if entry[1] is not hook:
        raise TypeError(f"HookRegistry._hooks[{target!r}] entries are not (type, hook, source)")
    pending = [h for h in HookRegistry._hooks[target] if h is not entry]
    if marked and pending:
        early.on_undo(lambda: HookRegistry._patched.discard(target))
        _registry_apply(target, pending, owner, attr, early)
    _registry_apply(target, [entry], owner, attr, ours)
    HookRegistry._patched.add(target)


def _registry_apply(target: str, hooks: list, owner, attr: str, patches: PatchSet) -> None:
    """HookRegistry applies ``hooks`` to ``target``; ``patches`` takes that back, with the ``from X import Y``
    bindings SGLang propagated it to (only while ``target`` is still what HookRegistry set)."""
    from sglang.srt.plugins.hook_registry import HookRegistry, _propagate_patch

    before = _current(owner, attr)

    def propagate_back() -> None:
        if after is not before and _current(owner, attr) is after:
            _propagate_patch(after, before, owner)

    try:
        patches.changed_by(owner, attr, lambda: HookRegistry._apply_target(target, hooks))
    finally:
        after = _current(owner, attr)
        patches.on_undo(propagate_back)


def _unregister(target: str, hook: Callable, marked: bool, listed: bool) -> None:
    """Our hook out of HookRegistry's books, the last of ``target``'s undo: the target is HookRegistry's
    to apply again only where install marked it and no other hook remains."""
    from sglang.srt.plugins.hook_registry import HookRegistry

    hooks = HookRegistry._hooks.get(target, [])
    hooks[:] = [h for h in hooks if h[1] is not hook]
    if not hooks:
        if marked:
            HookRegistry._patched.discard(target)
        if not listed:
            HookRegistry._hooks.pop(target, None)


def uninstall() -> None:
    """Undo every patch; a patch another plugin has since wrapped stays, but our hook goes inert."""
    with _state.lock:
        _state.active = _state.captured = False
        for route in (_state.route, _state.recorder):
            if route is not None:
                route.restore()
        _state.patches.undo()
        _state.targets = []
        _state.route = _state.recorder = _state.build = None
        _state.report = None


def _report(version: str, mode: str) -> AdapterReport:
    import importlib.metadata

    kernel = "unknown"
    for dist in ("sglang-kernel", "sgl-kernel"):
        try:
            kernel = f"{dist} {importlib.metadata.version(dist)}"
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    covered, native = list(COVERED), [DEFAULT_DECODE]
    if mode == "replace":
        covered, native = covered + [DEFAULT_DECODE], []
    return AdapterReport(
        engine=ENGINE, version=version, fa3_build=f"sgl_kernel ({kernel}, mode={mode})", active=True,
        covered=covered, engine_native=native, passed_through=dict(PASSED_THROUGH),
        wrapped=_state.targets + [f"{_state.route.module.__name__}.{_state.route.attr} (routed)"],
    )
