"""In-place ops registered the way engine kernels are (sgl_kernel, vLLM ``_C``, flashinfer:
``torch.library`` schemas with ``Tensor(a!)`` and a kernel writing through the pointer): the write
leaves the tensor's version counter as it was, which is what the reuse key cannot see."""

from __future__ import annotations

import torch

_libs: list[torch.library.Library] = []


def unversioned_writer(namespace: str, arg: str):
    """``torch.ops.<namespace>.write(<arg>, new)``: copies ``new`` into ``<arg>`` without a version bump."""
    lib = torch.library.Library(namespace, "DEF")
    lib.define(f"write(Tensor(a!) {arg}, Tensor new) -> ()")

    def write(target, new):
        with torch._C._AutoDispatchBelowADInplaceOrView():  # below the dispatcher's version bump
            target.copy_(new)

    lib.impl("write", write, "CPU")
    _libs.append(lib)
    return getattr(torch.ops, namespace).write
