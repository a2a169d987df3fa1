"""The CPU reference FA3 dressed as vLLM's ``vllm_flash_attn`` entries, with the installed signature.

vLLM's CPU wheel ships ``vllm_flash_attn/flash_attn_interface.py`` but cannot import it (no CUDA
extension), so the parameter list is read from the source with ``ast``; the stand-in therefore
binds exactly like the real entry, and an argument the reference cannot run must be at its default.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import pathlib

import torch

from tests.reference import fa3_reference as ref

_RUNNABLE = set(inspect.signature(ref.flash_attn_varlen_func).parameters)


def interface_source() -> pathlib.Path:
    spec = importlib.util.find_spec("vllm")
    return pathlib.Path(spec.origin).parent / "vllm_flash_attn" / "flash_attn_interface.py"


def real_signature(name: str) -> inspect.Signature:
    """The signature of ``vllm_flash_attn.<name>`` as written in the installed source."""
    tree = ast.parse(interface_source().read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    args = fn.args.args
    defaults = [None] * (len(args) - len(fn.args.defaults)) + list(fn.args.defaults)
    params = []
    for arg, default in zip(args, defaults):
        if default is None:
            value = inspect.Parameter.empty
        elif isinstance(default, ast.Name) and default.id == "DEFAULT_FA_VERSION":
            value = 3
        else:  # literals and ``torch.bfloat16``
            value = eval(compile(ast.Expression(default), "<default>", "eval"), {"torch": torch})
        params.append(inspect.Parameter(arg.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value))
    return inspect.Signature(params)


def make_varlen():
    """``flash_attn_varlen_func`` with vLLM's signature, running the reference FA3."""
    sig = real_signature("flash_attn_varlen_func")

    def flash_attn_varlen_func(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        extra = {n: v for n, v in bound.arguments.items() if n not in _RUNNABLE}
        unusual = {n: v for n, v in extra.items() if v != sig.parameters[n].default}
        if unusual:
            raise NotImplementedError(f"reference stand-in cannot run {sorted(unusual)}")
        return ref.flash_attn_varlen_func(**{n: v for n, v in bound.arguments.items() if n in _RUNNABLE})

    flash_attn_varlen_func.__signature__ = sig
    return flash_attn_varlen_func


def make_scheduler_metadata():
    """``get_scheduler_metadata`` with vLLM's signature (its names match the reference's)."""
    sig = real_signature("get_scheduler_metadata")

    def get_scheduler_metadata(*args, **kwargs):
        return ref.get_scheduler_metadata(**sig.bind(*args, **kwargs).arguments)

    get_scheduler_metadata.__signature__ = sig
    return get_scheduler_metadata
