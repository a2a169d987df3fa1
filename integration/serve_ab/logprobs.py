"""Exactness that can fail: prompt and top-k output logprobs of fixed prompts, compared bitwise.

Greedy ids of random-weight models barely move when attention's numbers change; logprobs move with
every bit. Each server answers the same fixed prompts one at a time at temperature 0; the answer is
kept as ``[token id, logprob]`` pairs (JSON numbers round-trip a Python float exactly), and two
servers agree only when every id and every float is identical.

Requests (field names as in vLLM 0.26.0 ``completion/protocol.py`` and SGLang 0.5.16
``io_struct.GenerateReqInput``): vLLM ``/v1/completions`` with ``logprobs``, ``prompt_logprobs``
and ``return_tokens_as_token_ids`` (top-k keys ``"token_id:N"``, never merged by decoding);
SGLang ``/generate`` with ``return_logprob``, ``top_logprobs_num`` and ``logprob_start_len=0``
(``meta_info.*_logprobs`` as ``[logprob, id, text]`` triples).
"""

from __future__ import annotations

import random

from . import server
from .errors import RunError

PROMPT_LENGTHS = (16, 300, 1000, 2500)
TOP = 20  # top-k per generated token (vLLM's default --max-logprobs)
PROMPT_TOP = 5  # top-k per prompt position
_SEED = 20943


def prompts() -> list[list[int]]:
    """The fixed prompts as token ids (plain vocabulary ids, no special tokens)."""
    out = []
    for index, length in enumerate(PROMPT_LENGTHS):
        rng = random.Random(_SEED + 100 + index)
        out.append([rng.randrange(1000, 100_000) for _ in range(length)])
    return out


def request_body(engine: str, model: str, ids: list[int], max_new_tokens: int) -> dict:
    if engine == "sglang":
        return {"input_ids": ids, "return_logprob": True, "top_logprobs_num": TOP, "logprob_start_len": 0,
                "sampling_params": {"temperature": 0, "max_new_tokens": max_new_tokens, "ignore_eos": True}}
    return {"model": model, "prompt": ids, "max_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True,
            "logprobs": TOP, "prompt_logprobs": PROMPT_TOP, "return_tokens_as_token_ids": True,
            "return_token_ids": True}


def _pairs(triples) -> list[list]:
    """SGLang ``[logprob, id, text]`` entries as sorted ``[id, logprob]`` pairs."""
    return sorted([int(t[1]), t[0]] for t in triples)


def _sglang(answer: dict) -> dict:
    meta = answer["meta_info"]
    prompt_top = [None if top is None else _pairs(top) for top in meta["input_top_logprobs"]]
    return {"output_ids": [int(t[1]) for t in meta["output_token_logprobs"]],
            "chosen": [t[0] for t in meta["output_token_logprobs"]],
            "output_top": [_pairs(top) for top in meta["output_top_logprobs"]],
            "prompt_chosen": [t[0] for t in meta["input_token_logprobs"]],
            "prompt_top": prompt_top}


def _token_id(key: str) -> int:
    if not key.startswith("token_id:"):
        raise ValueError(f"top-logprob key {key!r} is not 'token_id:N' (return_tokens_as_token_ids ignored?)")
    return int(key[len("token_id:"):])


def _vllm(answer: dict) -> dict:
    choice = answer["choices"][0]
    lp = choice["logprobs"]
    prompt_ids = choice.get("prompt_token_ids")
    prompt_top, prompt_chosen = [], []
    for pos, entry in enumerate(choice["prompt_logprobs"]):
        if entry is None:
            prompt_top.append(None)
            prompt_chosen.append(None)
            continue
        pairs = sorted([int(k), v["logprob"]] for k, v in entry.items())
        prompt_top.append(pairs)
        chosen = entry.get(str(prompt_ids[pos])) if prompt_ids else None
        prompt_chosen.append(None if chosen is None else chosen["logprob"])
    return {"output_ids": [_token_id(t) for t in lp["tokens"]], "chosen": list(lp["token_logprobs"]),
            "output_top": [sorted([_token_id(k), v] for k, v in top.items()) for top in lp["top_logprobs"]],
            "prompt_chosen": prompt_chosen, "prompt_top": prompt_top}


def parse(engine: str, answer) -> dict:
    """One answer as ``{output_ids, chosen, output_top, prompt_chosen, prompt_top}``; RunError if malformed."""
    try:
        out = _sglang(answer) if engine == "sglang" else _vllm(answer)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise RunError(f"logprob request: unexpected answer ({type(exc).__name__}: {exc}; {str(answer)[:300]})") \
            from exc
    if not out["output_ids"] or len(out["output_top"]) != len(out["output_ids"]):
        raise RunError(f"logprob request: {len(out['output_ids'])} output ids but {len(out['output_top'])} "
                       "top-k lists")
    return out


def collect(engine: str, port: int, model: str, max_new_tokens: int) -> dict:
    path = "/generate" if engine == "sglang" else "/v1/completions"
    answers = [parse(engine, server.post(port, path, request_body(engine, model, ids, max_new_tokens), timeout=300))
               for ids in prompts()]
    return {"max_new_tokens": max_new_tokens, "top": TOP, "prompt_top": PROMPT_TOP,
            "prompt_lengths": list(PROMPT_LENGTHS), "prompts": answers}


SECTIONS = ("prompt_top", "prompt_chosen", "output_ids", "chosen", "output_top")


def _numbers(entry) -> dict:
    """id -> logprob of one position (a top-k list, or a single chosen logprob under id -1)."""
    if entry is None:
        return {}
    if isinstance(entry, list):
        return {i: v for i, v in entry}
    return {-1: entry}


def compare(ref: dict, other: dict) -> dict | None:
    """None when bitwise identical; else the first differing place, how many positions differ, max |diff|.

    max |diff| is over logprobs of the same token id at the same position (ids only in one top-k
    count as differing positions but add no number)."""
    if ref["prompt_lengths"] != other["prompt_lengths"] or len(ref["prompts"]) != len(other["prompts"]):
        return {"first": "different prompt sets", "positions": None, "max_abs_diff": None}
    first, positions, worst = None, 0, 0.0
    for p, (a, b) in enumerate(zip(ref["prompts"], other["prompts"])):
        for section in SECTIONS:
            xs, ys = a[section], b[section]
            for pos in range(max(len(xs), len(ys))):
                x = xs[pos] if pos < len(xs) else "missing"
                y = ys[pos] if pos < len(ys) else "missing"
                if x == y:
                    continue
                positions += 1
                first = first or f"prompt {p} ({ref['prompt_lengths'][p]} tokens) {section}[{pos}]"
                if section != "output_ids" and "missing" not in (x, y):
                    nx, ny = _numbers(x), _numbers(y)
                    worst = max([worst] + [abs(nx[k] - ny[k]) for k in nx.keys() & ny.keys()
                                           if nx[k] is not None and ny[k] is not None])
    if first is None:
        return None
    return {"first": first, "positions": positions, "max_abs_diff": worst}
