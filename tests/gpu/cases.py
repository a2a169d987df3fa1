"""Random FA3 calls for the GPU exactness suite, for both real builds.

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


def _lengths(rng: random.Random, batch: int, context: int, q_len: int, idle: bool) -> list[int]:
    lengths = [rng.randint(q_len, context) for _ in range(batch)]
    lengths[rng.randrange(batch)] = context
    if idle and batch > 1:
        for i in rng.sample(range(batch), k=max(1, batch // 4)):
            lengths[i] = 0 if q_len == 1 else q_len
    return lengths


def vllm_case(rng: random.Random) -> dict:
    """A paged-KV call through vLLM's flash_attn_varlen_func surface."""
    mla = rng.random() < 0.15
    hd = 64 if mla else rng.choice((64, 128, 256))
    hk = 1 if mla else rng.choice((1, 2, 4, 8))
    ratio = rng.choice((1, 2, 4, 8, 16))
    batch = min(256, int(2 ** rng.uniform(0, 8)))
    q_len = 1 if rng.random() < 0.6 else rng.randint(2, 8)
    page = rng.choice((1, 16, 64))
    context = rng.choice((64, 256, 1024, 2048, 4096))
    while batch * context > MAX_TOKENS:
        context //= 2
    context = max(context, q_len, page)
    window = None if rng.random() < 0.5 else rng.choice((8, 64, 127, 1000, 10_000))
    fp8 = not mla and rng.random() < 0.1
    return dict(build="vllm", mla=mla, hd=hd, hdv=512 if mla else hd, hk=hk, h=hk * ratio, batch=batch,
                q_len=q_len, page=page, context=context, causal=rng.random() < 0.8,
                window=window, softcap=0.0 if (mla or rng.random() < 0.8) else 30.0,
                num_splits=rng.choice((0, 0, 1, 3)), sinks=not mla and rng.random() < 0.2, fp8=fp8,
                idle=rng.random() < 0.2, seed=rng.randrange(1 << 30))


def fa3fwd_case(rng: random.Random) -> dict:
    """A non-paged call through upstream flash_attn_with_kvcache (the fa3-fwd wheel: no paged KV, no windows)."""
    hd = rng.choice((64, 128, 256))
    hk = rng.choice((1, 2, 4, 8))
    batch = min(256, int(2 ** rng.uniform(0, 8)))
    q_len = 1 if rng.random() < 0.6 else rng.randint(2, 8)
    context = rng.choice((64, 256, 1024, 2048))
    while batch * context > MAX_TOKENS:
        context //= 2
    context = max(context, q_len + 8)
    return dict(build="fa3_fwd", hd=hd, hdv=hd, hk=hk, h=hk * rng.choice((1, 2, 4, 8, 16)), batch=batch,
                q_len=q_len, context=context, causal=rng.random() < 0.8, varlen_q=rng.random() < 0.3,
                k_new=rng.random() < 0.15, softcap=0.0 if rng.random() < 0.8 else 30.0,
                num_splits=rng.choice((0, 0, 1, 3)), pack_gqa=rng.choice((None, None, True, False)),
                idle=rng.random() < 0.2, seed=rng.randrange(1 << 30))


def _generators(seed: int, device):
    """A CPU generator (permutations, small tensors) and one on the device (caches: fast to fill)."""
    cpu = torch.Generator(device="cpu").manual_seed(seed)
    dev = torch.Generator(device=device).manual_seed(seed)
    return cpu, lambda *s: torch.randn(*s, generator=dev, device=device, dtype=torch.bfloat16)


def vllm_call(c: dict, device="cuda") -> dict:
    g, rnd = _generators(c["seed"], device)
    pages_per_seq = math.ceil(c["context"] / c["page"])
    num_pages = c["batch"] * pages_per_seq + 1
    k = rnd(num_pages, c["page"], c["hk"], c["hd"])
    v = rnd(num_pages, c["page"], c["hk"], c["hdv"])
    total_q = c["batch"] * c["q_len"]
    q = rnd(total_q, c["h"], c["hd"])
    rng = random.Random(c["seed"])
    kwargs = dict(
        q=q, k=k, v=v, max_seqlen_q=c["q_len"],
        cu_seqlens_q=(torch.arange(c["batch"] + 1, dtype=torch.int32) * c["q_len"]).to(device),
        max_seqlen_k=c["context"],
        seqused_k=torch.tensor(_lengths(rng, c["batch"], c["context"], c["q_len"], c["idle"]), dtype=torch.int32,
                               device=device),
        block_table=(torch.randperm(num_pages - 1, generator=g)[: c["batch"] * pages_per_seq].to(torch.int32) + 1)
        .view(c["batch"], pages_per_seq).to(device),
        causal=c["causal"], window_size=None if c["window"] is None else (c["window"], 0), softcap=c["softcap"],
        num_splits=c["num_splits"], fa_version=3,
        q_v=rnd(total_q, c["h"], c["hdv"]) if c["mla"] else None,
        s_aux=torch.randn(c["h"], generator=g).to(device=device, dtype=torch.bfloat16) if c["sinks"] else None,
    )
    if c["fp8"]:
        for name in ("q", "k", "v"):
            kwargs[name] = kwargs[name].to(torch.float8_e4m3fn)
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


def run_cases(build, make_case, make_call, count: int, seed: int) -> dict:
    """Run ``count`` random cases; returns counts and the first failures (empty = all bitwise equal)."""
    from attn_sched_plugin import stats

    wrapped = wrap(build.forward, build.provider, build.convention)
    rng = random.Random(seed)
    tally, failures, reasons, rejected = Counter(), [], Counter(), Counter()
    for _ in range(count):
        case = make_case(rng)
        kwargs = make_call(case)
        try:
            plain = build.forward(**kwargs)
        except RuntimeError as exc:
            tally["fa3_rejects_case"] += 1
            rejected[str(exc).splitlines()[0][-120:]] += 1
            continue
        before = stats.snapshot()
        runtime.new_step()
        first = wrapped(**kwargs)
        second = wrapped(**kwargs)
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
    return {"counts": dict(tally), "passthrough": dict(reasons), "fa3_rejected": dict(rejected), "failures": failures}
