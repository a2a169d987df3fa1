"""Where a call runs: device, stream and CUDA-graph capture, as part of the reuse key.

Metadata depends on the device's SM count; FA3 rewrites the tile semaphore inside the tensor in
every call, so one tensor must not serve two streams at once; and a tensor computed outside a
capture (or in another capture) is never written by this graph's replays. Calls in different
contexts therefore never share metadata. The device is the call's tensors' device, and the
stream that device's current stream: FA3 runs there (it guards to q's device), whatever the
thread's current device is.
"""

from __future__ import annotations

import ctypes
import functools
import logging

import torch

log = logging.getLogger("attn_sched_plugin")

NOT_CAPTURING = 0
UNKNOWN_CAPTURE = -1
DRIVER = "libcuda.so.1"
_ACTIVE = 1  # CU_STREAM_CAPTURE_STATUS_ACTIVE (0: none, 2: invalidated)

_CPU = ("cpu", 0, NOT_CAPTURING)  # device, stream, capture


@functools.lru_cache(maxsize=1)
def _capture_info_fn():
    """``cuStreamGetCaptureInfo`` of the CUDA driver, or None (logged once).

    The driver, not a runtime: a process has exactly one driver, while loading a ``libcudart`` by
    name can load a second runtime next to torch's and query that one. The plain symbol keeps its
    CUDA 11.3 ABI (stream, status*, id*) in every later driver (cuda.h maps the API name to
    ``_v2`` / ``_v3`` by macro; the old symbol stays for old binaries). Four NULLs follow, so a
    build whose symbol took the longer signature gets NULL optional outputs, which it accepts.
    Opening the driver does not initialise CUDA.
    """
    try:
        fn = ctypes.CDLL(DRIVER).cuStreamGetCaptureInfo
    except (OSError, AttributeError) as exc:
        log.warning("attn-sched: cuStreamGetCaptureInfo not readable from %s (%s); calls inside CUDA-graph "
                    "captures pass through (capture_unidentified) and graphs share nothing", DRIVER, exc)
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_ulonglong)] + [
        ctypes.c_void_p
    ] * 4
    return fn


def capture_ids_readable() -> bool:
    """Whether capture ids can be read here (the activation line and the doctor say so when not)."""
    return _capture_info_fn() is not None


def capture_id(stream: int) -> int:
    """The unique id of the capture running on ``stream``, ``NOT_CAPTURING``, or ``UNKNOWN_CAPTURE``."""
    fn = _capture_info_fn()
    if fn is None:
        return UNKNOWN_CAPTURE
    status, ident = ctypes.c_int(0), ctypes.c_ulonglong(0)
    if fn(stream, ctypes.byref(status), ctypes.byref(ident), None, None, None, None) != 0:
        return UNKNOWN_CAPTURE
    if status.value == NOT_CAPTURING:
        return NOT_CAPTURING
    return ident.value if status.value == _ACTIVE else UNKNOWN_CAPTURE


def current(t: torch.Tensor) -> tuple:
    """(device, stream, capture id) for a call whose batch tensors include ``t``."""
    if not t.is_cuda:
        return _CPU
    device = t.get_device()
    stream = torch._C._cuda_getCurrentRawStream(device)
    if device == torch.cuda.current_device() and not torch.cuda.is_current_stream_capturing():
        return (device, stream, NOT_CAPTURING)  # the common case, without a driver call
    return (device, stream, capture_id(stream))
