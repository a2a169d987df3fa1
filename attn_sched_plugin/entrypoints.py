"""Zero-argument callables the engines discover through their plugin entry-point groups.

Both run in every engine process, before models exist; they must be cheap, idempotent and must
not initialise CUDA, which ``instrument`` guarantees (providers resolve lazily).
"""

from .activation import instrument


def sglang_plugin() -> None:
    """Entry point of group ``sglang.srt.plugins``."""
    instrument("sglang")


def vllm_plugin() -> None:
    """Entry point of group ``vllm.general_plugins``."""
    instrument("vllm")
