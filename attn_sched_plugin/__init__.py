"""attn-sched-plugin: FlashAttention-3 scheduler metadata computed once per step and shape.

The data path, top to bottom: an FA3 call (``interceptor``) is mapped onto the forward op's own
argument names (``binding``), reduced to the exact parameters FA3 derives from them
(``descriptor``), keyed together with the identity of its batch tensors and its execution
context (``context``), looked up in the per-step cache (``cache``), and on a miss computed by the
same FA3 build's ``get_scheduler_metadata`` (``providers``) before the call goes on with
``scheduler_metadata=``. Anything that cannot be proven exact passes through untouched.
"""

__version__ = "0.1.0"
