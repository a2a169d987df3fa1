"""Test-only SGLang plugin: SGLang's own FA3 scheduler-metadata precompute switched off.

SGLang >= 0.5.11 computes the decode metadata once per step (``_compute_scheduler_metadata``, the
seed PR #20943/#21104). Replacing it with a function that returns None puts every layer back on
FA3's per-layer ``prepare_varlen_num_blocks``: the seed's baseline. The A/B runner copies this file
into a generated distribution (``seed_baseline.write_dist``) that only the ``seed-baseline``
variant has on its PYTHONPATH; SGLang finds it through the ``sglang.srt.plugins`` entry points.
"""

import os
import sys

NAME = "attn_sched_seed_baseline"
TARGET = "sglang.srt.layers.attention.flashattention_backend.FlashAttentionBackend._compute_scheduler_metadata"


def no_precompute(self, *args, **kwargs):
    """Every decode step falls back to FA3's per-layer scheduling."""
    return None


def register() -> None:
    """Entry point: a REPLACE hook through SGLang's HookRegistry, in processes that run attention."""
    # Like the attn-sched adapter: SGLang's scheduler processes import sgl_kernel before
    # load_plugins(); importing the FA3 backend anywhere else (the HTTP process) would initialise CUDA.
    if "sgl_kernel" not in sys.modules:
        print(f"attn-sched-seed-baseline: pid {os.getpid()}: no sgl_kernel in this process, nothing replaced",
              file=sys.stderr, flush=True)
        return
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(TARGET, no_precompute, HookType.REPLACE)
    print(f"attn-sched-seed-baseline: pid {os.getpid()}: REPLACE hook registered on {TARGET} (returns None)",
          file=sys.stderr, flush=True)
