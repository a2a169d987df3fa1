"""Issue 22 on real FA3: each build's own refusal of a wrong-size ``scheduler_metadata`` is what the
interceptor recognises as a refusal (``errors.is_rejection``), so it is retried without metadata,
while any other error of FA3's propagates. The messages are recorded for the results file."""

from __future__ import annotations

import random

import pytest
import torch

from attn_sched_plugin import errors

from .cases import _fresh_caches
from .test_exactness import SUITES

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("which", list(SUITES))
def test_fa3s_own_refusal_is_recognised(which, request, record):
    fixture, make_case, make_call, seed = SUITES[which]
    build = request.getfixturevalue(fixture)
    rng = random.Random(seed)
    for _ in range(50):  # the first case FA3 alone runs
        fresh = _fresh_caches(make_call(make_case(rng)))
        try:
            build.forward(**fresh())
            break
        except RuntimeError:
            continue
    # 3 int32: never a metadata size (1 semaphore slot + a multiple of 4, or a multiple of 4)
    wrong = torch.zeros(3, dtype=torch.int32, device="cuda")
    with pytest.raises(RuntimeError) as info:
        build.forward(**fresh(), scheduler_metadata=wrong)
    torch.cuda.synchronize()
    record(build=build.name, message=str(info.value).splitlines()[0][:200])
    assert errors.is_rejection(info.value), str(info.value)
