"""Every call site the adapter claims, checked against the INSTALLED vLLM source.

If vLLM moves a call (a local alias, a partial bound at import, a new builder, metadata built with
``headdim_v``), one of these fails instead of coverage silently changing.
"""

import ast
import importlib.util
import pathlib

import pytest
from packaging.version import Version

pytest.importorskip("vllm")

from attn_sched_plugin.adapters import vllm_targets as targets  # noqa: E402

pytestmark = pytest.mark.vllm

ENTRY = targets.FA3_ENTRY
VERSION = targets.parse(targets.installed_version())


def source(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)
    if spec is None:
        pytest.fail(f"{module} is not installed")
    return ast.parse(pathlib.Path(spec.origin).read_text())


def scopes(tree: ast.Module) -> dict[str, ast.AST]:
    """'Class.method' / 'function' -> node."""
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    out[f"{node.name}.{item.name}"] = item
    return out


def calls(node: ast.AST, name: str) -> list[ast.Call]:
    return [c for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == name]


def keywords(call: ast.Call) -> set[str]:
    return {k.arg for k in call.keywords}


def module_level_import(tree: ast.Module, name: str) -> bool:
    """``name`` bound by a module-level ``from ... import`` (possibly under a module-level ``if``)."""
    body = list(tree.body)
    while body:
        node = body.pop()
        if isinstance(node, ast.If):
            body += node.body + node.orelse
        elif isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


def import_time_reads(tree: ast.Module, name: str) -> list[int]:
    """Lines that read ``name`` outside any function: an alias or partial bound at import time
    would keep the unpatched entry. Reads inside functions happen per call and see the patch."""
    in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.Lambda))
                    for n in ast.walk(f)}
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == name
            and isinstance(n.ctx, ast.Load) and id(n) not in in_functions]


def entry_modules() -> list[str]:
    mods = [targets.FA_MODULE]
    if VERSION >= Version("0.16.0"):
        mods.append(targets.DIFFKV_MODULE)
    return mods


@pytest.mark.parametrize("module", entry_modules())
def test_entry_is_a_module_global_read_at_call_time(module):
    tree = source(module)
    assert module_level_import(tree, ENTRY)
    assert calls(tree, ENTRY), f"{module} no longer calls {ENTRY}"
    assert import_time_reads(tree, ENTRY) == []


def _main_call(tree) -> ast.Call:
    """The paged FA call of FlashAttentionImpl.forward (through FA4DenseAttentionKernel from 0.32)."""
    s = scopes(tree)
    forward = s["FlashAttentionImpl.forward"]
    found = calls(forward, ENTRY) + calls(forward, "_FA4_DENSE_ATTENTION_KERNEL")
    paged = [c for c in found if "block_table" in keywords(c)]
    assert len(paged) == 1, [ast.unparse(c)[:80] for c in found]
    if paged[0].func.id != ENTRY:  # the kernel object must reach the patched global
        assert calls(s["FA4DenseAttentionKernel.kernel"], ENTRY)
    return paged[0]


def test_forward_passes_metadata_and_split_bound():
    call = _main_call(source(targets.FA_MODULE))
    assert {"scheduler_metadata", "num_splits", "seqused_k", "window_size", "fa_version"} <= keywords(call)
    split = next(k.value for k in call.keywords if k.arg == "num_splits")
    assert "max_num_splits" in ast.unparse(source(targets.FA_MODULE)) and isinstance(split, (ast.Name, ast.Attribute))


def test_encoder_attention_is_varlen_k():
    s = scopes(source(targets.FA_MODULE))
    (call,) = calls(s["FlashAttentionImpl._forward_encoder_attention"], ENTRY)
    assert "cu_seqlens_k" in keywords(call) and "seqused_k" not in keywords(call)


def test_builder_turns_aot_off_where_claimed():
    build = ast.unparse(scopes(source(targets.FA_MODULE))["FlashAttentionMetadataBuilder.build"])
    assert "not fast_build" in build
    assert "len(sliding_window_configs) > 1" in build and "self.aot_schedule = False" in build
    if VERSION >= Version("0.32.0"):  # 0.13-0.16 keep AOT on and only force num_splits=1
        assert "not envs.VLLM_BATCH_INVARIANT" in build


def test_builder_metadata_omits_headdim_v_softcap_and_uses_live_max():
    """The premise of ``native_mismatch``: vLLM's own metadata lacks these parameters."""
    tree = source(targets.FA_MODULE)
    found = calls(tree, "get_scheduler_metadata")
    assert found
    for call in found:
        kw = keywords(call)
        assert "headdim_v" not in kw and "has_softcap" not in kw
        max_k = ast.unparse(next(k.value for k in call.keywords if k.arg == "max_seqlen_k"))
        assert "max_seq" in max_k, max_k  # the live maximum, not the block-table span


def test_backends_use_the_builder_we_subclass():
    s = scopes(source(targets.FA_MODULE))
    (ret,) = [n for n in ast.walk(s["FlashAttentionBackend.get_builder_cls"]) if isinstance(n, ast.Return)]
    assert ast.unparse(ret.value) == "FlashAttentionMetadataBuilder"
    if VERSION >= Version("0.16.0"):  # DiffKV inherits it; our DiffKV subclass relies on that
        diffkv = scopes(source(targets.DIFFKV_MODULE))
        assert "FlashAttentionDiffKVBackend.get_builder_cls" not in diffkv
        assert calls(diffkv["FlashAttentionDiffKVImpl.forward"], ENTRY)


def test_no_module_imports_the_entry_from_the_backend_module():
    root = pathlib.Path(importlib.util.find_spec("vllm").origin).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text(errors="ignore")
        if "backends.flash_attn import" in text and ENTRY in text:
            tree = ast.parse(text)
            offenders += [f"{path}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                          and n.module in (targets.FA_MODULE, targets.DIFFKV_MODULE)
                          and any(a.name == ENTRY for a in n.names)]
    assert offenders == []


def test_registry_location():
    mods = targets.registry_modules(targets.installed_version())
    if VERSION < Version("0.13.0"):
        assert mods == () and importlib.util.find_spec("vllm.attention.backends.registry") is None
        return
    tree = source(mods[0])
    s = scopes(tree)
    assert "register_backend" in s and "AttentionBackendEnum" in s
    args = [a.arg for a in s["register_backend"].args.args]
    assert "class_path" in args  # we pass it by keyword: its position differs between 0.13 and 0.16
    members = {t.id for n in s["AttentionBackendEnum"].body if isinstance(n, ast.Assign) for t in n.targets}
    assert "FLASH_ATTN" in members
    assert ("FLASH_ATTN_DIFFKV" in members) == (VERSION >= Version("0.16.0"))


def test_composite_fa3_half_gets_nothing_for_gemma3():
    """The premise of ``NOTHING_FOR_PREFIX_LM`` (doctor, activation line): TRITON_FLASH_ATTN's FA3 half builds
    with vLLM's own builder (not our subclass), its graph support is NEVER when a sliding layer lacks
    ``mm_prefix_clamp_sliding_window``, and Gemma-3 never sets that flag."""
    if not targets.has_composite_fa3():
        pytest.skip(f"vLLM {targets.installed_version()} has no TRITON_FLASH_ATTN")
    composite = scopes(source("vllm.v1.attention.backends.composite"))
    never = ast.unparse(composite["MMPrefixAttentionRouting.get_cudagraph_support"])
    assert "_has_unclamped_window" in never and "AttentionCGSupport.NEVER" in never
    assert "mm_prefix_clamp_sliding_window" in ast.unparse(composite["_has_unclamped_window"])
    fa_half = scopes(source("vllm.v1.attention.backends.triton_flash_attn"))
    assert "_FABackend" in fa_half and "_FABackend.get_builder_cls" not in fa_half  # the stock builder
    gemma3 = pathlib.Path(importlib.util.find_spec("vllm.model_executor.models.gemma3").origin).read_text()
    assert "mm_prefix_clamp_sliding_window" not in gemma3 and "per_layer_sliding_window" in gemma3
