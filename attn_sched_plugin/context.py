"""Where a call runs: device, stream and CUDA-graph capture, as part of the reuse key.

Metadata depends on the current device's SM count; FA3 rewrites the tile semaphore inside the
tensor in every call, so one tensor must not serve two streams at once; and a tensor computed
outside a capture (or in another capture) is never written by this graph's replays. Calls in
different contexts therefore never share metadata.
"""

from __future__ import annotations

import ctypes
import functools
import logging

import torch

log = logging.getLogger("attn_sched_plugin")

NOT_CAPTURING = 0
UNKNOWN_CAPTURE = -1

_CPU = ("cpu", 0, NOT_CAPTURING)  # device, stream, capture


@functools.lru_cache(maxsize=1)
def _capture_info_fn():
    """``cudaStreamGetCaptureInfo`` from the CUDA runtime torch already loaded, or None.

    Its first three parameters (stream, status*, id*) are the same in every CUDA release; the
    later output pointers are passed as NULL, which every release accepts.
    """
    for soname in ("libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"):
        try:
            fn = ctypes.CDLL(soname).cudaStreamGetCaptureInfo
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_ulonglong)] + [
            ctypes.c_void_p
        ] * 4
        return fn
    log.warning("attn-sched: CUDA runtime's cudaStreamGetCaptureInfo not found; calls inside CUDA-graph captures pass through")
    return None


def capture_id(stream: int) -> int:
    """The unique id of the capture running on ``stream``, or ``UNKNOWN_CAPTURE``."""
    fn = _capture_info_fn()
    if fn is None:
        return UNKNOWN_CAPTURE
    status, ident = ctypes.c_int(0), ctypes.c_ulonglong(0)
    if fn(stream, ctypes.byref(status), ctypes.byref(ident), None, None, None, None) != 0 or status.value != 1:
        return UNKNOWN_CAPTURE
    return ident.value


def current(t: torch.Tensor) -> tuple:
    """(device, stream, capture id) for a call whose batch tensors include ``t``."""
    if not t.is_cuda:
        return _CPU
    device = torch.cuda.current_device()
    stream = torch._C._cuda_getCurrentRawStream(device)
    if torch.cuda.is_current_stream_capturing():
        return (device, stream, capture_id(stream))
    return (device, stream, NOT_CAPTURING)
