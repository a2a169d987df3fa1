"""Random FA3 calls for the GPU exactness suite, for the three real builds (vLLM's library, sgl_kernel, fa3-fwd).

Each case draws a call the build supports, runs FA3 alone, then the wrapped forward twice in one
step (the second call reuses the first's metadata), and compares all outputs bitwise. A case
whose plain call raises (a shape FA3 itself rejects) is counted, never compared.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import torch

from attn_sched_plugin import runtime
from attn_sched_plugin.interceptor import wrap
from attn_sched_plugin.verify import bitwise_equal

MAX_TOKENS = 1 << 17  # batch x context cap, keeps a case small

# (q heads, KV heads) of real models and their TP shards (issue 11: odd counts, ratios 3/5/6/7), then random ones
REAL_HEADS = [(64, 8), (32, 8), (16, 2), (8, 1), (40, 8), (20, 4), (10, 2), (5, 1), (28, 4), (14, 2), (7, 1),
              (40, 10), (20, 5), (10, 5), (16, 8), (8, 4), (32, 32), (24, 4), (12, 2), (6, 1), (48, 8), (96, 8),
              (56, 8), (36, 6), (9, 3), (30, 5), (5, 5), (3, 3), (16, 16), (64, 4), (128, 8)]
RATIOS = (1, 2, 3, 4, 5, 6, 7, 8, 16)
PAGES = (1, 16, 32, 64, 128, 256)


def _lengths(rng: random.Random, batch: int, context: int, q_len: int, idle: bool) -> list[int]:
    lengths = [rng.randint(q_len, context) for _ in range(batch)]
    lengths[rng.randrange(batch)] = context
    if idle and batch > 1:
        for i in rng.sample(range(batch), k=max(1, batch // 4)):
            lengths[i] = 0 if q_len == 1 else q_len
    return lengths


def _heads(rng: random.Random, limit: int = 128) -> tuple[int, int]:
    if rng.random() < 0.6:
        h, hk = rng.choice(REAL_HEADS)
    else:
        hk = rng.randint(1, 10)
        h = hk * rng.choice(RATIOS)
    while h > limit:  # e.g. sinks: at most 64 query heads
        h //= 2
        hk = max(1, min(hk, h))
        while h % hk:
            hk -= 1
    return h, hk


def _head_dims(rng: random.Random, mla_ok: bool, fp8: bool) -> tuple[int, int, bool]:
    """(q/k dim, v dim, MLA with q_v); the 64/128 pair is the declined class (different tiles)."""
    if mla_ok and not fp8 and rng.random() < 0.12:
        return 64, 512, True
    if fp8:
        return rng.choice((64, 96, 128, 256)), None, False
    d, dv = rng.choice(((64, 64), (96, 96), (128, 128), (128, 128), (192, 128), (256, 256), (256, 256), (64, 128)))
    return d, dv, False


def vllm_case(rng: random.Random) -> dict:
    """A paged-KV call as vLLM makes it: block table wider than needed (max_model_len / block size),
    ``max_seqlen_k`` the live maximum (or, as in captures, larger), lengths changing per request."""
    fp8 = rng.random() < 0.12
    d, dv, mla = _head_dims(rng, mla_ok=True, fp8=fp8)
    sinks = not (mla or fp8) and d == (dv or d) and rng.random() < 0.15
    h, hk = (rng.choice((16, 32, 64, 128)), 1) if mla else _heads(rng, limit=64 if sinks else 128)
    batch = min(256, int(2 ** rng.uniform(0, 8)))
    q_len = 1 if rng.random() < 0.5 else rng.randint(2, 17)
    page = rng.choice(PAGES)
    context = rng.choice((64, 256, 1000, 1024, 2048, 4096))
    while batch * context > MAX_TOKENS and context > 64:
        context //= 2
    context = max(context, q_len)
    live = context if rng.random() < 0.7 else rng.randint(q_len, context)
    extra_pages = rng.choice((0, 0, 1, 3, 17))
    max_seqlen_k = live if rng.random() < 0.8 else context + extra_pages * page  # captures pass the padded bound
    window = None if rng.random() < 0.5 else rng.choice((8, 64, 127, 200, 1000, 1023, 10_000))
    return dict(build="vllm", mla=mla, hd=d, hdv=512 if mla else (dv or d), hk=hk, h=h, batch=batch, q_len=q_len,
                page=page, context=context, live=live, extra_pages=extra_pages, max_seqlen_k=max_seqlen_k,
                causal=rng.random() < 0.8, window=window,
                softcap=0.0 if (mla or rng.random() < 0.8) else 30.0, num_splits=rng.choice((0, 0, 0, 1, 3, 32)),
                sinks=sinks, fp8=fp8, idle=rng.random() < 0.2, seed=rng.randrange(1 << 30))


def sglang_case(rng: random.Random) -> dict:
    """A paged call through sgl_kernel's flash_attn_with_kvcache as SGLang makes it (decode, extend with
    cu_seqlens_q, SWA windows, chunked attention, MLA qv, fp8 with descales, sinks, appended KV)."""
    fp8 = rng.random() < 0.12
    d, dv, mla = _head_dims(rng, mla_ok=True, fp8=fp8)
    sinks = not (mla or fp8) and d == (dv or d) and rng.random() < 0.15
    h, hk = (rng.choice((16, 32, 64, 128)), 1) if mla else _heads(rng, limit=64 if sinks else 128)
    batch = min(128, int(2 ** rng.uniform(0, 7)))
    q_len = 1 if rng.random() < 0.5 else rng.randint(2, 17)
    page = rng.choice(PAGES)
    context = rng.choice((64, 256, 1024, 2048, 4096))
    while batch * context > MAX_TOKENS and context > 64:
        context //= 2
    context = max(context, q_len + 4)
    window = None if rng.random() < 0.5 else rng.choice((8, 127, 1000, 1023, 10_000))
    return dict(build="sgl_kernel", mla=mla, hd=d, hdv=512 if mla else (dv or d), hk=hk, h=h, batch=batch,
                q_len=q_len, page=page, context=context, extra_pages=rng.choice((0, 0, 2, 9)),
                varlen_q=q_len > 1 and rng.random() < 0.7, causal=rng.random() < 0.85, window=window,
                chunk=0 if (window or rng.random() < 0.85) else rng.choice((64, 1024)),
                softcap=0.0 if (mla or rng.random() < 0.8) else 30.0, num_splits=rng.choice((0, 0, 0, 1, 3)),
                pack_gqa=rng.choice((None, None, None, None, True, True, False)), sinks=sinks, fp8=fp8,
                k_new=not (mla or fp8) and rng.random() < 0.1, idle=rng.random() < 0.2, seed=rng.randrange(1 << 30))


def fa3fwd_case(rng: random.Random) -> dict:
    """A non-paged call through upstream flash_attn_with_kvcache (the fa3-fwd wheel: no paged KV, no windows,
    no fp16)."""
    d, dv = rng.choice(((64, 64), (96, 96), (128, 128), (192, 128), (256, 256), (64, 128)))
    h, hk = _heads(rng)
    batch = min(256, int(2 ** rng.uniform(0, 8)))
    q_len = 1 if rng.random() < 0.6 else rng.randint(2, 17)
    context = rng.choice((64, 256, 1024, 2048))
    while batch * context > MAX_TOKENS and context > 64:
        context //= 2
    context = max(context, q_len + 8)
    return dict(build="fa3_fwd", hd=d, hdv=dv, hk=hk, h=h, batch=batch,
                q_len=q_len, context=context, causal=rng.random() < 0.8, varlen_q=rng.random() < 0.3,
                k_new=rng.random() < 0.15, softcap=0.0 if rng.random() < 0.8 else 30.0,
                num_splits=rng.choice((0, 0, 1, 3)), pack_gqa=rng.choice((None, None, None, None, True, True, False)),
                idle=rng.random() < 0.2, seed=rng.randrange(1 << 30))


def _generators(seed: int, device):
    """A CPU generator (permutations, small tensors) and one on the device (caches: fast to fill)."""
    cpu = torch.Generator(device="cpu").manual_seed(seed)
    dev = torch.Generator(device=device).manual_seed(seed)
    return cpu, lambda *s: torch.randn(*s, generator=dev, device=device, dtype=torch.bfloat16)


def _descales(c: dict, device) -> dict:
    """fp8 calls carry per-(batch, KV head) descales, as the engines pass them (neutral to scheduling)."""
    return {n: torch.rand(c["batch"], c["hk"], device=device) + 0.5 for n in ("q_descale", "k_descale", "v_descale")}


def _paged(c: dict, rnd, g, device):
    """k/v page pools and a shuffled block table ``extra_pages`` wider than the longest request needs."""
    width = math.ceil(c["context"] / c["page"]) + c["extra_pages"]
    num_pages = c["batch"] * width + 1
    k = rnd(num_pages, c["page"], c["hk"], c["hd"])
    v = rnd(num_pages, c["page"], c["hk"], c["hdv"])
    table = (torch.randperm(num_pages - 1, generator=g)[: c["batch"] * width].to(torch.int32) + 1).view(c["batch"], width)
    return k, v, table.to(device)


def vllm_call(c: dict, device="cuda") -> dict:
    g, rnd = _generators(c["seed"], device)
    k, v, table = _paged(c, rnd, g, device)
    total_q = c["batch"] * c["q_len"]
    q = rnd(total_q, c["h"], c["hd"])
    rng = random.Random(c["seed"])
    lengths = _lengths(rng, c["batch"], c["live"], c["q_len"], c["idle"])
    kwargs = dict(
        q=q, k=k, v=v, max_seqlen_q=c["q_len"],
        cu_seqlens_q=(torch.arange(c["batch"] + 1, dtype=torch.int32) * c["q_len"]).to(device),
        max_seqlen_k=max(c["max_seqlen_k"], max(lengths)),
        seqused_k=torch.tensor(lengths, dtype=torch.int32, device=device), block_table=table,
        causal=c["causal"], window_size=None if c["window"] is None else (c["window"], 0), softcap=c["softcap"],
        num_splits=c["num_splits"], fa_version=3,
        q_v=rnd(total_q, c["h"], c["hdv"]) if c["mla"] else None,
        s_aux=torch.randn(c["h"], generator=g).to(device=device, dtype=torch.bfloat16) if c["sinks"] else None,
    )
    if c["fp8"]:
        for name in ("q", "k", "v"):
            kwargs[name] = kwargs[name].to(torch.float8_e4m3fn)
        kwargs.update(_descales(c, device))
    return kwargs


def sglang_call(c: dict, device="cuda") -> dict:
    g, rnd = _generators(c["seed"], device)
    k, v, table = _paged(c, rnd, g, device)
    rng = random.Random(c["seed"])
    s_new = rng.randint(1, 4) if c["k_new"] else 0
    lengths = _lengths(rng, c["batch"], c["context"] - s_new, c["q_len"], c["idle"])
    kwargs = dict(k_cache=k, v_cache=v, page_table=table, cache_seqlens=torch.tensor(lengths, dtype=torch.int32,
                  device=device), causal=c["causal"], window_size=(-1, -1) if c["window"] is None else (c["window"], 0),
                  attention_chunk=c["chunk"], softcap=c["softcap"], num_splits=c["num_splits"], pack_gqa=c["pack_gqa"],
                  sinks=torch.randn(c["h"], generator=g).to(device=device, dtype=torch.bfloat16) if c["sinks"] else None)
    rows = c["batch"] * c["q_len"]
    if c["varlen_q"]:
        kwargs.update(q=rnd(rows, c["h"], c["hd"]), max_seqlen_q=c["q_len"],
                      cu_seqlens_q=(torch.arange(c["batch"] + 1, dtype=torch.int32) * c["q_len"]).to(device))
        if c["mla"]:
            kwargs["qv"] = rnd(rows, c["h"], c["hdv"])
    else:
        kwargs["q"] = rnd(c["batch"], c["q_len"], c["h"], c["hd"])
        if c["mla"]:
            kwargs["qv"] = rnd(c["batch"], c["q_len"], c["h"], c["hdv"])
    if s_new:
        kwargs.update(k=rnd(c["batch"], s_new, c["hk"], c["hd"]), v=rnd(c["batch"], s_new, c["hk"], c["hdv"]))
    if c["fp8"]:
        for name in ("q", "k_cache", "v_cache"):
            kwargs[name] = kwargs[name].to(torch.float8_e4m3fn)
        kwargs.update(_descales(c, device))
    return kwargs


def fa3fwd_call(c: dict, device="cuda") -> dict:
    _, rnd = _generators(c["seed"], device)
    rng = random.Random(c["seed"])
    s_new = rng.randint(1, 4) if c["k_new"] else 0
    lengths = _lengths(rng, c["batch"], c["context"] - s_new, c["q_len"], c["idle"])
    kwargs = dict(
        k_cache=rnd(c["batch"], c["context"], c["hk"], c["hd"]), v_cache=rnd(c["batch"], c["context"], c["hk"], c["hdv"]),
        cache_seqlens=torch.tensor(lengths, dtype=torch.int32, device=device), causal=c["causal"],
        softcap=c["softcap"], num_splits=c["num_splits"], pack_gqa=c["pack_gqa"],
    )
    if c["varlen_q"]:
        kwargs.update(q=rnd(c["batch"] * c["q_len"], c["h"], c["hd"]), max_seqlen_q=c["q_len"],
                      cu_seqlens_q=(torch.arange(c["batch"] + 1, dtype=torch.int32) * c["q_len"]).to(device))
    else:
        kwargs["q"] = rnd(c["batch"], c["q_len"], c["h"], c["hd"])
    if s_new:
        kwargs.update(k=rnd(c["batch"], s_new, c["hk"], c["hd"]), v=rnd(c["batch"], s_new, c["hk"], c["hdv"]))
    return kwargs


def vllm_nonvarlen_case(rng: random.Random) -> dict:
    """A 4-D q (no ``cu_seqlens_q``) on vLLM's library (flash-attention #161/#162): paged with ``seqused_k``
    (mha_fwd is then varlen: shared), or a dense (batch, context) cache with no per-batch vector at all,
    where the fork's get_scheduler_metadata never fits (declined ``no_seqused_k``, passed through)."""
    d, dv, _ = _head_dims(rng, mla_ok=False, fp8=False)
    h, hk = _heads(rng)
    batch = min(64, int(2 ** rng.uniform(0, 6)))
    q_len = 1 if rng.random() < 0.5 else rng.randint(2, 17)
    context = rng.choice((64, 256, 1000, 1024, 2048))
    while batch * context > MAX_TOKENS and context > 64:
        context //= 2
    context = max(context, q_len)
    return dict(build="vllm", hd=d, hdv=dv, hk=hk, h=h, batch=batch, q_len=q_len, context=context,
                seqused_k=rng.random() < 0.7, page=rng.choice(PAGES), extra_pages=rng.choice((0, 1, 5)),
                causal=rng.random() < 0.8,
                window=None if rng.random() < 0.5 else rng.choice((8, 64, 127, 1023, 10_000)),
                softcap=0.0 if rng.random() < 0.8 else 30.0, num_splits=rng.choice((0, 0, 0, 1, 3)),
                idle=rng.random() < 0.2, seed=rng.randrange(1 << 30))


def vllm_nonvarlen_call(c: dict, device="cuda") -> dict:
    g, rnd = _generators(c["seed"], device)
    if c["seqused_k"]:
        k, v, table = _paged(c, rnd, g, device)
        lengths = _lengths(random.Random(c["seed"]), c["batch"], c["context"], c["q_len"], c["idle"])
        kv = dict(k=k, v=v, block_table=table, max_seqlen_k=max(lengths),
                  seqused_k=torch.tensor(lengths, dtype=torch.int32, device=device))
    else:  # mha_fwd checks k as (batch, max_seqlen_k, ...)
        kv = dict(k=rnd(c["batch"], c["context"], c["hk"], c["hd"]), v=rnd(c["batch"], c["context"], c["hk"], c["hdv"]),
                  max_seqlen_k=c["context"])
    return dict(q=rnd(c["batch"], c["q_len"], c["h"], c["hd"]), max_seqlen_q=c["q_len"], cu_seqlens_q=None,
                causal=c["causal"], window_size=None if c["window"] is None else (c["window"], 0),
                softcap=c["softcap"], num_splits=c["num_splits"], fa_version=3, **kv)


def run_cases(build, make_case, make_call, count: int, seed: int) -> dict:
    """Run ``count`` random cases; returns counts and the first failures (empty = all bitwise equal).

    Calls that append KV (``k``/``v``) write the cache in place: each run gets its own copy of it.
    """
    from attn_sched_plugin import stats

    wrapped = wrap(build.forward, build.fa3)
    rng = random.Random(seed)
    tally, failures, reasons, rejected, heads = Counter(), [], Counter(), Counter(), Counter()
    for _ in range(count):
        case = make_case(rng)
        kwargs = make_call(case)
        fresh = _fresh_caches(kwargs)
        try:
            plain = build.forward(**fresh())
        except RuntimeError as exc:
            tally["fa3_rejects_case"] += 1
            rejected[str(exc).splitlines()[0][-120:]] += 1
            continue
        heads[f"{case['h']}/{case['hk']}"] += 1
        before = stats.snapshot()
        runtime.new_step()
        first = wrapped(**fresh())
        second = wrapped(**fresh())
        torch.cuda.synchronize()
        after = stats.snapshot()
        injected = after["intercepted"]["injected"] - before["intercepted"]["injected"]
        for reason, n in after["passthrough"].items():
            if n > before["passthrough"].get(reason, 0):
                reasons[reason] += n - before["passthrough"].get(reason, 0)
        tally["cases"] += 1
        tally["injected_calls"] += injected
        tally["computed"] += after["intercepted"]["computed"] - before["intercepted"]["computed"]
        if not (bitwise_equal(first, plain) and bitwise_equal(second, plain)):
            tally["mismatches"] += 1
            if len(failures) < 20:
                failures.append(case)
    return {"counts": dict(tally), "passthrough": dict(reasons), "fa3_rejects_case": dict(rejected),
            "distinct_head_configs": len(heads), "failures": failures}


def _fresh_caches(kwargs: dict):
    """``kwargs`` with a private copy of the KV cache per call when the call appends to it."""
    if kwargs.get("k") is None or "k_cache" not in kwargs:
        return lambda: kwargs
    k_cache, v_cache = kwargs["k_cache"].clone(), kwargs["v_cache"].clone()
    return lambda: {**kwargs, "k_cache": k_cache.clone(), "v_cache": v_cache.clone()}
