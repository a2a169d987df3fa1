"""Host time per eager FA3 call on the GPU machine: what FA3 saves with supplied metadata, what the
plugin's wrapper costs, and what the plugin as deployed adds in eager steps (issue 12).

One process, real FA3 builds, decode-shaped calls as the engines make them (b=32, 32 q heads,
8 KV heads, head dim 128, pages of 16). Variants, per call, host time only (``perf_counter_ns``
around loops of calls; the GPU keeps up, and each loop ends with a synchronize):

* ``fa3``: FA3 alone, scheduling itself (its prepare kernel is launched inside the call), called
  the way an engine module calls it (a function reading the module's global);
* ``fa3_with_metadata``: FA3 given metadata computed once: ``fa3 - fa3_with_metadata`` is the
  host time a shared tensor can save per call at most;
* ``wrapper``: the plugin's wrapper on the reuse path (metadata already computed this step):
  what sharing in an eager step would cost; its stages are timed one by one (``--breakdown``);
* ``deployed_eager``: the call as an engine module makes it in an eager step with the plugin
  installed: through the module global that ``adapters.routing.EntryRoute`` points back at FA3
  after a capture. ``deployed_eager - fa3`` is the plugin's net added host time per eager call.

Variants alternate within each repeat; we report median and p10/p90 over repeats. Run on the GPU
machine (``integration/gpu_run.sh host``):
python benchmarks/host_overhead.py [--repeats 200] [--loop 100] [--out benchmarks/results/host-overhead.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attn_sched_plugin import context, interceptor, runtime, switches  # noqa: E402
from attn_sched_plugin.adapters.routing import EntryRoute  # noqa: E402
from attn_sched_plugin.bench import builds  # noqa: E402
from attn_sched_plugin.binding import Binder  # noqa: E402
from attn_sched_plugin.descriptor import derive_fields, parameters  # noqa: E402

B, H, HK, D, PAGE, PAGES = 32, 32, 8, 128, 16, 64


def _calls(build) -> tuple[tuple, dict]:
    """The decode call of the engine whose surface this build has (vLLM varlen or SGLang/upstream kvcache)."""
    dev, bf16 = "cuda", torch.bfloat16
    seqlens = torch.tensor([100 + 7 * i for i in range(B)], dtype=torch.int32, device=dev)
    cu_q = torch.arange(B + 1, dtype=torch.int32, device=dev)
    q = torch.randn(B, H, D, dtype=bf16, device=dev)
    if build.paged:  # vLLM's FlashAttentionImpl.forward call (positional q, k, v like vLLM)
        k = torch.randn(B * PAGES + 1, PAGE, HK, D, dtype=bf16, device=dev)
        table = torch.arange(B * PAGES, dtype=torch.int32, device=dev).view(B, PAGES)
        return (q, k, k), dict(out=torch.empty_like(q), cu_seqlens_q=cu_q, max_seqlen_q=1, seqused_k=seqlens,
                               max_seqlen_k=int(seqlens.max()), softmax_scale=D ** -0.5, causal=True,
                               alibi_slopes=None, window_size=[-1, -1], block_table=table, softcap=0.0,
                               scheduler_metadata=None, fa_version=3, q_descale=None, k_descale=None,
                               v_descale=None, num_splits=0, s_aux=None)
    # SGLang's decode call shape on the upstream surface (fa3-fwd: non-paged cache)
    cache = torch.randn(B, PAGE * PAGES, HK, D, dtype=bf16, device=dev)
    return (), dict(q=q, k_cache=cache, v_cache=cache, cache_seqlens=seqlens, cu_seqlens_q=cu_q, max_seqlen_q=1,
                    softmax_scale=D ** -0.5, causal=True, window_size=(-1, -1), softcap=0.0, num_splits=0)


def _per_call_ns(fn, args, kwargs, loop: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter_ns()
    for _ in range(loop):
        fn(*args, **kwargs)
    elapsed = time.perf_counter_ns() - t0
    torch.cuda.synchronize()
    return elapsed / loop


def _summary(samples: list[float]) -> dict:
    q = statistics.quantiles(samples, n=10)
    return {"median_us": round(statistics.median(samples) / 1e3, 3), "p10_us": round(q[0] / 1e3, 3),
            "p90_us": round(q[-1] / 1e3, 3)}


def measure(build, repeats: int, loop: int) -> dict:
    args, kwargs = _calls(build)
    binder = Binder(build.forward, build.fa3.convention)
    sig, batch = derive_fields(binder.fields(args, kwargs), build.fa3.provider.seqlen_k_from_call)
    metadata = build.fa3.provider.compute(sig, batch)
    wrapped = interceptor.wrap(build.forward, build.fa3)
    # two engine modules calling their FA3 entry the same way: one without the plugin, one whose entry the
    # adapter routed for a capture, then released for eager steps
    plain_engine, engine = types.ModuleType("engine_without_plugin"), types.ModuleType("engine_with_plugin")
    plain_engine.fa3 = engine.fa3 = build.forward
    route = EntryRoute(engine, "fa3", wrapped)
    route.capture()
    route.release()

    def fa3(*a, **kw):
        return plain_engine.fa3(*a, **kw)

    def deployed_eager(*a, **kw):
        return engine.fa3(*a, **kw)

    variants = {
        "fa3": (fa3, args, kwargs),
        "fa3_with_metadata": (fa3, args, {**kwargs, "scheduler_metadata": metadata}),
        "wrapper": (lambda *a, **kw: wrapped(*a, **kw), args, kwargs),
        "deployed_eager": (deployed_eager, args, kwargs),
    }
    runtime.new_step()
    wrapped(*args, **kwargs)  # first layer of the step computes; every later call reuses
    for _ in range(10):
        for fn, a, kw in variants.values():
            _per_call_ns(fn, a, kw, loop)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, a, kw = variants[name]
            samples[name].append(_per_call_ns(fn, a, kw, loop))
    tally = runtime.state().tally
    assert tally.computed == 1 and not tally.passthrough, tally
    per_repeat = {
        "fa3_saves_with_metadata": [f - m for f, m in zip(samples["fa3"], samples["fa3_with_metadata"])],
        "wrapper_added_vs_fa3": [w - f for w, f in zip(samples["wrapper"], samples["fa3"])],
        "deployed_eager_added_vs_fa3": [d - f for d, f in zip(samples["deployed_eager"], samples["fa3"])],
    }
    return {"per_call": {n: _summary(s) for n, s in samples.items()},
            "differences": {n: _summary(s) for n, s in per_repeat.items()}}


def breakdown(build, repeats: int, loop: int) -> dict:
    """Each stage of the wrapper's reuse path alone (medians, us), in path order."""
    args, kwargs = _calls(build)
    provider = build.fa3.provider
    wrapped = interceptor.wrap(build.forward, build.fa3)
    runtime.new_step()
    wrapped(*args, **kwargs)
    binder = Binder(build.forward, build.fa3.convention)
    fields = binder.fields(args, kwargs)
    signature, sizes, tensors = parameters(fields, provider.seqlen_k_from_call)
    cache = runtime.state()
    identities = cache.identities(sizes, tensors)
    where = context.current(tensors[0])
    key = (provider.name, signature, sizes, identities, where)
    metadata = cache.get(key)
    assert metadata is not None
    stages = {
        "argument binding (Binder.fields)": lambda: binder.fields(args, kwargs),
        "derivation (descriptor.parameters)": lambda: parameters(fields, provider.seqlen_k_from_call),
        "batch-tensor identities (cache.identities)": lambda: cache.identities(sizes, tensors),
        "context (device, stream, capture)": lambda: context.current(tensors[0]),
        "key and lookup": lambda: cache.get((provider.name, signature, sizes, identities, where)),
        "switches and step state": lambda: (switches.current().disabled, runtime.state().tally),
        "empty lambda (subtract from each stage)": lambda: None,
    }
    n = max(repeats // 4, 20)
    return {name: round(statistics.median(_per_call_ns(fn, (), {}, loop) for _ in range(n)) / 1e3, 3)
            for name, fn in stages.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--loop", type=int, default=100)
    parser.add_argument("--fa3", action="append", help="repeatable; default: vllm-lib ($ATTN_SCHED_FA3_LIB) and fa3_fwd")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "host-overhead.json")
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        print("host_overhead: needs a CUDA GPU and a real FA3 build (run it on the GPU machine)", file=sys.stderr)
        return 2
    switches.reload(env={})
    results = {}
    for spec in opts.fa3 or [None, "fa3_fwd"]:
        build = builds.load(spec)
        results[build.name] = measure(build, opts.repeats, opts.loop)
        results[build.name]["breakdown_median_us"] = breakdown(build, opts.repeats, opts.loop)
        d = results[build.name]["differences"]
        print(f"{build.name}: FA3 saves {d['fa3_saves_with_metadata']['median_us']:.2f} us/call with metadata; "
              f"wrapper adds {d['wrapper_added_vs_fa3']['median_us']:.2f}; deployed eager adds "
              f"{d['deployed_eager_added_vs_fa3']['median_us']:.2f} (p10 {d['deployed_eager_added_vs_fa3']['p10_us']:.2f}, "
              f"p90 {d['deployed_eager_added_vs_fa3']['p90_us']:.2f})")
    props = torch.cuda.get_device_properties(0)
    report = {
        "what": "host us per eager decode call (b=32, 32/8 heads, d=128): FA3 alone, with metadata, the wrapper, "
                "and the plugin as deployed in eager steps",
        "command": "python benchmarks/host_overhead.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "card": props.name, "torch": torch.__version__, "python": platform.python_version(),
        "cpu": _cpu_model(), "repeats": opts.repeats, "calls_per_loop": opts.loop, "builds": results,
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {opts.out}")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
