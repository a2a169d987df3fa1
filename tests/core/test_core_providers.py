"""Schema binding against the real FA3 op schemas, and the fail-closed paths of providers and wrap."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from core_calls import derive_call, kvcache_call, varlen_call

from attn_sched_plugin import interceptor, providers
from attn_sched_plugin.binding import KVCACHE, VARLEN
from attn_sched_plugin.errors import Decline
from attn_sched_plugin.errors import ProviderUnavailable
from attn_sched_plugin.providers import Build, Provider, bind_schema
from attn_sched_plugin.verify import bitwise_equal

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "op_schemas"


def real_schema(build: str, op: str) -> str:
    """The schema string of ``op`` extracted from a real FA3 wheel."""
    (path,) = SCHEMAS.glob(f"{build}-*.txt")
    (line,) = [s for s in path.read_text().splitlines() if s.startswith(op + "(")]
    return line


_LIBS: list[torch.library.Library] = []  # a Library must stay alive as long as its ops


class RecordingOp:
    """A throwaway torch op with a given schema whose CPU impl records the arguments it received."""

    def __init__(self, namespace: str, schema: str, result=None, error: Exception | None = None):
        lib = torch.library.Library(namespace, "DEF")
        name = lib.define(schema)
        self.names = [a.name for a in torch._C.parse_schema(schema).arguments]
        self.calls: list[dict] = []
        self.result = torch.tensor([7, 7], dtype=torch.int32) if result is None else result
        self.error = error
        lib.impl(name, self._impl, "CPU")
        _LIBS.append(lib)

    def _impl(self, *args, **kwargs):
        received = dict(zip(self.names, args))
        received.update(kwargs)
        self.calls.append(received)
        if self.error is not None:
            raise self.error
        return self.result.clone()


VLLM_OP = RecordingOp("attn_sched_test_vllm", real_schema("vllm_flash_attn", "get_scheduler_metadata"))
FA3_FWD_OP = RecordingOp("attn_sched_test_fa3fwd", real_schema("fa3_fwd", "get_scheduler_metadata"))
# a fork that adds a required argument we know nothing about
UNKNOWN_OP = RecordingOp(
    "attn_sched_test_unknown",
    real_schema("vllm_flash_attn", "get_scheduler_metadata").replace("int sm_margin)", "int sm_margin, int cp_rank)"),
)
# a fork with upstream-Python names and extra optional / defaulted arguments
ALIAS_OP = RecordingOp(
    "attn_sched_test_alias",
    "get_scheduler_metadata(int batch_size, int max_seqlen_q, int max_seqlen_k, int num_heads_q, int num_heads_kv, "
    "int headdim, int headdim_v, ScalarType qkv_dtype, Tensor cache_seqlens, Tensor? cu_seqlens_q, "
    "Tensor? cache_leftpad, int? page_size, bool causal, int window_size_left, int window_size_right, "
    "bool has_softcap, int num_splits, bool? pack_gqa, int sm_margin, Tensor? cp_tot_seqused_k, "
    "int cp_world_size=1) -> Tensor",
)
RAISING_OP = RecordingOp("attn_sched_test_raise", real_schema("fa3_fwd", "get_scheduler_metadata"),
                         error=RuntimeError("CUDA error: no kernel image is available"))


def test_real_schemas_parse():
    for path in SCHEMAS.glob("*.txt"):
        ops = [torch._C.parse_schema(s) for s in path.read_text().splitlines() if s and not s.startswith("#")]
        assert sorted(o.name for o in ops) == ["fwd", "get_scheduler_metadata"], path.name


@pytest.mark.parametrize("build", ["vllm_flash_attn", "fa3_fwd"])
def test_bind_schema_maps_every_argument_of_the_real_schemas(build):
    schema = torch._C.parse_schema(real_schema(build, "get_scheduler_metadata"))
    names, fill_none = bind_schema(schema, build)
    schema_names = [a.name for a in schema.arguments]
    assert sorted(names.values()) == sorted(schema_names)  # every schema argument is bound
    assert all(canonical == name for canonical, name in names.items())  # both use the C++ names
    assert fill_none == ()
    assert ("attention_chunk" in names) == (build == "fa3_fwd")


def test_bind_schema_aliases_and_unknown_optionals():
    schema = torch.ops.attn_sched_test_alias.get_scheduler_metadata.default._schema
    names, fill_none = bind_schema(schema, "alias")
    assert names["num_heads"] == "num_heads_q" and names["num_heads_k"] == "num_heads_kv"
    assert names["seqused_k"] == "cache_seqlens" and names["leftpad_k"] == "cache_leftpad"
    assert names["is_causal"] == "causal"
    assert fill_none == ("cp_tot_seqused_k",)  # optional without default: passed as None
    assert "cp_world_size" not in names.values()  # defaulted: left to its default


def _derived(ref, **kwargs):
    return derive_call(ref.flash_attn_with_kvcache, KVCACHE, **kwargs)


EXPECTED = dict(batch_size=3, max_seqlen_q=2, max_seqlen_k=20, num_heads=8, num_heads_k=2, headdim=128,
                headdim_v=128, qkv_dtype=torch.float16, cu_seqlens_q=None, cu_seqlens_k=None, cu_seqlens_k_new=None,
                seqused_q=None, leftpad_k=None, page_size=4, max_seqlen_k_new=0, is_causal=True, window_size_left=7,
                window_size_right=0, has_softcap=True, num_splits=3, pack_gqa=True, sm_margin=2)


def _call_for_expected():
    return kvcache_call(b=3, s_q=2, h=8, h_k=2, d=128, page_size=4, pages_per_seq=5, dtype=torch.float16,
                        causal=True, window_size=(7, 0), softcap=2.5, num_splits=3, pack_gqa=True, sm_margin=2)


@pytest.mark.parametrize("op, namespace", [(VLLM_OP, "attn_sched_test_vllm"), (FA3_FWD_OP, "attn_sched_test_fa3fwd")])
def test_provider_compute_passes_each_argument_by_name(ref, op, namespace):
    call = _call_for_expected()
    sig, batch = _derived(ref, **call)
    out = Provider(namespace, namespace).compute(sig, batch)
    assert torch.equal(out, op.result)
    received = op.calls[-1]
    assert received.pop("seqused_k") is call["cache_seqlens"]
    # the vLLM fork has no attention_chunk; upstream fa3_fwd gets the neutral 0
    expected = EXPECTED if namespace == "attn_sched_test_vllm" else dict(EXPECTED, attention_chunk=0)
    assert received == expected


def test_provider_compute_with_aliased_names(ref):
    call = _call_for_expected()
    sig, batch = _derived(ref, **call)
    Provider("alias", "attn_sched_test_alias").compute(sig, batch)
    received = ALIAS_OP.calls[-1]
    assert received["cache_seqlens"] is call["cache_seqlens"]
    assert (received["num_heads_q"], received["num_heads_kv"], received["causal"]) == (8, 2, True)
    assert received["cp_tot_seqused_k"] is None and received["cache_leftpad"] is None


def test_build_lacking_a_canonical_argument_at_non_neutral_value_declines(ref):
    sig, batch = _derived(ref, **kvcache_call(attention_chunk=8))
    before = len(VLLM_OP.calls)
    with pytest.raises(Decline) as info:
        Provider("vllm", "attn_sched_test_vllm").compute(sig, batch)
    assert info.value.reason == "build_lacks_attention_chunk"
    assert len(VLLM_OP.calls) == before  # nothing was computed with the chunk silently dropped


def test_alias_build_lacking_cu_seqlens_k_declines_varlen_k(ref):
    sig, batch = derive_call(ref.flash_attn_varlen_func, VARLEN, **varlen_call(page_size=None))
    with pytest.raises(Decline) as info:
        Provider("alias", "attn_sched_test_alias").compute(sig, batch)
    assert info.value.reason == "build_lacks_cu_seqlens_k"


def test_schema_with_unknown_required_argument_is_unavailable(ref):
    provider = Provider("forked", "attn_sched_test_unknown")
    ok, why = provider.available()
    assert not ok and "cp_rank" in why and "forked" in why
    sig, batch = _derived(ref, **kvcache_call())
    with pytest.raises(ProviderUnavailable):
        provider.compute(sig, batch)
    assert UNKNOWN_OP.calls == []


def test_namespace_without_get_scheduler_metadata_is_unavailable(ref, tally, caplog):
    provider = Provider("empty-build", "attn_sched_test_empty")
    ok, why = provider.available()
    assert not ok
    assert "empty-build" in why and "get_scheduler_metadata" in why and "\n" not in why
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, Build(provider, KVCACHE))
    call = kvcache_call()
    with caplog.at_level(logging.WARNING, logger="attn_sched_plugin"):
        outs = [fa(**call) for _ in range(3)]
    assert all(bitwise_equal(o, ref.flash_attn_with_kvcache(**call)) for o in outs)
    assert tally().passthrough == {"provider_unavailable": 3} and tally().injected == 0
    assert len([r for r in caplog.records if "get_scheduler_metadata" in r.getMessage()]) == 1


def test_named_builds_resolve_lazily():
    provider = providers.BUILDS["fa3_fwd"].provider
    assert provider._op is None  # nothing imported at creation
    ok, why = provider.available()  # fa3_fwd is not installed in the CPU env
    assert not ok and "fa3_fwd" in why


def test_provider_op_raising_passes_through_and_logs_once(ref, tally, caplog):
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, Build(Provider("raising", "attn_sched_test_raise"), KVCACHE))
    call = kvcache_call()
    with caplog.at_level(logging.WARNING, logger="attn_sched_plugin"):
        outs = [fa(**call) for _ in range(3)]
    assert all(bitwise_equal(o, ref.flash_attn_with_kvcache(**call)) for o in outs)
    assert tally().passthrough == {"plugin_error": 3} and tally().injected == 0
    assert len([r for r in caplog.records if "no kernel image" in r.getMessage()]) == 1


def test_forward_rejecting_metadata_is_retried_then_passed_through(ref, tally, caplog):
    seen = []

    def entry(q, k_cache, v_cache, cache_seqlens=None, page_table=None, scheduler_metadata=None):
        seen.append(scheduler_metadata)
        if scheduler_metadata is not None:
            raise RuntimeError("scheduler_metadata must have shape (17)")
        return q * 2

    fa = interceptor.wrap(entry, ref.build())
    call = {k: v for k, v in kvcache_call().items() if k in ("q", "k_cache", "v_cache", "cache_seqlens",
                                                               "page_table")}
    with caplog.at_level(logging.WARNING, logger="attn_sched_plugin"):
        first = fa(**call)
        later = [fa(**call) for _ in range(2)]
    assert torch.equal(first, call["q"] * 2) and all(torch.equal(o, first) for o in later)
    assert seen[0] is not None and seen[1:] == [None, None, None]  # one try, one retry, then never again
    assert tally().passthrough == {"fa3_rejected": 3} and tally().injected == 0
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1


def test_a_rejection_disables_only_those_batch_sizes(ref, tally):
    """Keyed on the exact parameters: another batch of the same signature is still shared (issue 15)."""
    def entry(q, k_cache, v_cache, cache_seqlens=None, page_table=None, scheduler_metadata=None):
        if scheduler_metadata is not None and q.shape[0] == 2:
            raise RuntimeError("scheduler_metadata must have shape (17)")
        return q * 2

    fa = interceptor.wrap(entry, ref.build())
    keep = ("q", "k_cache", "v_cache", "cache_seqlens", "page_table")
    small, large = ({k: v for k, v in kvcache_call(b=b).items() if k in keep} for b in (2, 3))
    fa(**small), fa(**small), fa(**large)
    assert tally().passthrough == {"fa3_rejected": 2} and tally().injected == 1


def test_forward_error_unrelated_to_metadata_propagates(ref):
    def entry(q, k_cache, v_cache, cache_seqlens=None, page_table=None, scheduler_metadata=None):
        raise RuntimeError("out of memory")

    fa = interceptor.wrap(entry, ref.build())
    call = {k: v for k, v in kvcache_call().items() if k in ("q", "k_cache", "v_cache", "cache_seqlens",
                                                               "page_table")}
    with pytest.raises(RuntimeError, match="out of memory"):
        fa(**call)


def test_wrap_refuses_a_function_without_scheduler_metadata(ref):
    with pytest.raises(TypeError, match="scheduler_metadata"):
        interceptor.wrap(lambda q, k, v: q, ref.build())


def test_wrap_is_idempotent_and_keeps_the_original(ref):
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
    assert interceptor.is_wrapped(fa) and not interceptor.is_wrapped(ref.flash_attn_with_kvcache)
    assert interceptor.wrap(fa, ref.build()) is fa
    assert fa.__wrapped__ is ref.flash_attn_with_kvcache


def test_build_lacking_attention_chunk_passes_the_call_through(ref, tally):
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, Build(Provider("vllm", "attn_sched_test_vllm"), KVCACHE))
    call = kvcache_call(attention_chunk=8)
    assert bitwise_equal(fa(**call), ref.flash_attn_with_kvcache(**call))
    assert tally().passthrough == {"build_lacks_attention_chunk": 1} and tally().injected == 0
