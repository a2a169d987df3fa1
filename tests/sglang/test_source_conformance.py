"""Every target and FA3 call site the adapter claims is checked against the installed SGLang source.

A future SGLang that renames a callback, moves an FA3 call out of the hooked forwards, or changes
what its wrappers hand to ``torch.ops.sgl_kernel.fwd`` fails here instead of silently losing coverage.
"""

from __future__ import annotations

import ast
import inspect

import pytest

pytest.importorskip("sglang")
pytestmark = pytest.mark.sglang

from attn_sched_plugin.adapters import sglang_targets as targets  # noqa: E402
from attn_sched_plugin.binding import KVCACHE  # noqa: E402


@pytest.fixture(scope="module")
def era():
    era = targets.era_for(targets.parse(targets.installed_version()))
    assert era is not None, "installed sglang predates the supported range"
    return era


@pytest.fixture(scope="module")
def backend_tree(sglang_backend):
    return ast.parse(inspect.getsource(sglang_backend))


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _fa3_calls(node: ast.AST) -> list[ast.Call]:
    return [c for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
            and c.func.id == "flash_attn_with_kvcache"]


def test_backend_imports_the_wrapped_dispatcher(backend_tree, era, sglang_backend):
    module, name = era.fa3_entry.rsplit(".", 1)
    imports = [n for n in backend_tree.body if isinstance(n, ast.ImportFrom) and n.module == module]
    assert any(alias.name == name for n in imports for alias in n.names), f"backend no longer imports {era.fa3_entry}"
    assert sglang_backend.flash_attn_with_kvcache is targets.resolve(era.fa3_entry)


def test_hooked_methods_exist_with_expected_parameters(backend_tree, era):
    methods = _methods(_class(backend_tree, "FlashAttentionBackend"))
    for mode in ("keep-native", "replace"):
        for name, leading in targets.method_targets(era, mode).items():
            assert name in methods, f"FlashAttentionBackend.{name} is gone"
            params = tuple(a.arg for a in methods[name].args.args)
            assert params[: len(leading)] == leading, (name, params)


def test_every_fa3_call_site_of_the_module_is_flash_attention_backend_s(backend_tree):
    """The adapter routes the module's global FA3 entry: every caller must be the backend whose metadata
    callbacks (step boundaries) it hooks."""
    tree_calls = _fa3_calls(backend_tree)
    inside = _fa3_calls(_class(backend_tree, "FlashAttentionBackend"))
    assert len(tree_calls) >= 10, "fewer FA3 call sites than any supported release has"
    assert sorted(c.lineno for c in tree_calls) == sorted(c.lineno for c in inside), (
        "an FA3 call outside FlashAttentionBackend would be routed without our step boundaries")


def test_fa3_call_sites_use_keywords_the_interceptor_understands(backend_tree, era):
    entry_params = set(inspect.signature(targets.resolve(era.fa3_entry)).parameters)
    known = set(KVCACHE.renames) | KVCACHE.neutral | {KVCACHE.version_arg}
    for call in _fa3_calls(backend_tree):
        assert not call.args, f"line {call.lineno}: positional FA3 arguments"
        keywords = {k.arg for k in call.keywords if k.arg}
        assert keywords <= entry_params, (call.lineno, keywords - entry_params)
        assert keywords <= known, (call.lineno, keywords - known)
        ver = [ast.unparse(k.value) for k in call.keywords if k.arg == "ver"]
        assert ver == ["self.fa_impl_ver"], (call.lineno, ver)


def test_only_the_default_decode_call_carries_sglang_metadata(backend_tree):
    carrying = [c for c in _fa3_calls(backend_tree) if any(k.arg == "scheduler_metadata" for k in c.keywords)]
    decode = _methods(_class(backend_tree, "FlashAttentionBackend"))["forward_decode"]
    assert len(carrying) == 1 and carrying[0] in _fa3_calls(decode)


def test_dispatcher_forwards_metadata_to_fa3_only_for_ver_3(era):
    fn = targets.resolve(era.fa3_entry)
    tree = ast.parse(inspect.getsource(fn))
    branch = next(n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test) == "ver == 3")
    call = next(c for c in ast.walk(branch.body[0]) if isinstance(c, ast.Call))
    assert ast.unparse(call.func) == "fa3_flash_attn_with_kvcache"
    forwarded = {k.arg: ast.unparse(k.value) for k in call.keywords}
    for name in ("scheduler_metadata", "cache_seqlens", "page_table", "cu_seqlens_q", "max_seqlen_q", "window_size",
                 "causal", "num_splits", "softcap", "qv"):
        assert forwarded.get(name) == name, f"dispatcher no longer forwards {name}"


def test_sgl_kernel_wrapper_hard_codes_what_kvcache_convention_says(sglang_backend):
    import torch
    from sgl_kernel import flash_attn

    call = next(c for c in ast.walk(ast.parse(inspect.getsource(flash_attn.flash_attn_with_kvcache)))
                if isinstance(c, ast.Call) and ast.unparse(c.func) == "torch.ops.sgl_kernel.fwd.default")
    schema = [a.name for a in torch.ops.sgl_kernel.fwd.default._schema.arguments]
    passed = dict(zip(schema, (ast.unparse(a) for a in call.args)))
    passed.update({k.arg: ast.unparse(k.value) for k in call.keywords})
    for op_name in KVCACHE.fixed:
        assert passed[op_name] == "None", (op_name, passed[op_name])
    checked = [(surface, op) for surface, op in KVCACHE.renames.items() if op in passed]  # causal/window: split in C++
    assert len(checked) >= 15
    for surface, op_name in checked:
        assert passed[op_name] == surface, (surface, op_name, passed[op_name])
    assert (passed["is_causal"], passed["window_size_left"]) == ("causal", "window_size[0]")
    assert passed["scheduler_metadata"] == "scheduler_metadata"


def test_multi_step_draft_backend_is_made_of_hooked_backends(backend_tree, era):
    multi = _methods(_class(backend_tree, "FlashAttentionMultiStepBackend"))
    built = [c for c in ast.walk(multi["__init__"]) if isinstance(c, ast.Call)
             and ast.unparse(c.func) == "FlashAttentionBackend"]
    assert built, "draft backends are no longer FlashAttentionBackend instances"
    for name in era.callbacks:
        if name not in multi:
            continue
        delegated = [c for c in ast.walk(multi[name]) if isinstance(c, ast.Call)
                     and isinstance(c.func, ast.Attribute) and c.func.attr == name]
        assert delegated, f"FlashAttentionMultiStepBackend.{name} no longer delegates to the per-step backends"
