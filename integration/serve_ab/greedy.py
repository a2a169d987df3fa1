"""Greedy output ids for fixed prompts, one request at a time: exactness across variants.

Dummy weights are seeded (1234 in both engines), so every fresh server of a model computes the same
function; with temperature 0 and one prompt at a time, any difference between variants is a change
in the numbers the attention produced.
"""

from __future__ import annotations

import random

from . import server
from .errors import RunError

PROMPT_LENGTHS = (16, 128, 1000)
_SEED = 20943


def prompts() -> list[list[int]]:
    """The fixed prompts as token ids (plain vocabulary ids, no special tokens)."""
    out = []
    for index, length in enumerate(PROMPT_LENGTHS):
        rng = random.Random(_SEED + index)
        out.append([rng.randrange(1000, 100_000) for _ in range(length)])
    return out


def request_body(engine: str, model: str, ids: list[int], max_new_tokens: int, stream: bool = False) -> dict:
    """The engine's native greedy request: SGLang /generate, vLLM /v1/completions."""
    if engine == "sglang":
        return {"input_ids": ids, "stream": stream,
                "sampling_params": {"temperature": 0, "max_new_tokens": max_new_tokens, "ignore_eos": True}}
    return {"model": model, "prompt": ids, "max_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True,
            "return_token_ids": True, "stream": stream}


PATH = {"sglang": "/generate", "vllm": "/v1/completions"}


def output_ids(engine: str, answer) -> list[int]:
    """The generated ids from an engine's answer (SGLang: ``output_ids``; vLLM: ``choices[0].token_ids``)."""
    try:
        ids = answer["output_ids"] if engine == "sglang" else answer["choices"][0]["token_ids"]
    except (KeyError, IndexError, TypeError) as exc:
        raise RunError(f"greedy request: no output ids in the answer ({str(answer)[:300]})") from exc
    if not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
        raise RunError(f"greedy request: output ids are not a list of ints ({str(ids)[:300]})")
    return ids


def collect(engine: str, port: int, model: str, max_new_tokens: int) -> list[list[int]]:
    return [output_ids(engine, server.post(port, PATH[engine], request_body(engine, model, ids, max_new_tokens),
                                           timeout=300))
            for ids in prompts()]


def first_difference(reference: list[list[int]], other: list[list[int]]) -> str | None:
    """None when identical, else where the first difference is."""
    if len(reference) != len(other):
        return f"{len(other)} outputs vs {len(reference)}"
    for p, (a, b) in enumerate(zip(reference, other)):
        if a != b:
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return f"prompt {p} differs at token {at}"
    return None
