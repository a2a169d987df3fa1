"""Greedy ids: fixed prompts, the engines' native request and answer shapes, the comparison."""

from __future__ import annotations

import pytest

from integration.serve_ab import greedy
from integration.serve_ab.errors import RunError


def test_prompts_are_fixed_plain_ids():
    a, b = greedy.prompts(), greedy.prompts()
    assert a == b and [len(p) for p in a] == list(greedy.PROMPT_LENGTHS)
    assert all(1000 <= i < 100_000 for p in a for i in p)
    assert len({tuple(p[:16]) for p in a}) == len(a)  # distinct prompts, not prefixes of one another


def test_request_bodies_are_greedy_and_fixed_length():
    sg = greedy.request_body("sglang", "/tmp/models/m", [5, 6], 32)
    assert sg == {"input_ids": [5, 6], "stream": False,
                  "sampling_params": {"temperature": 0, "max_new_tokens": 32, "ignore_eos": True}}
    vl = greedy.request_body("vllm", "/tmp/models/m", [5, 6], 32, stream=True)
    assert vl == {"model": "/tmp/models/m", "prompt": [5, 6], "max_tokens": 32, "temperature": 0, "ignore_eos": True,
                  "return_token_ids": True, "stream": True}


def test_output_ids_from_each_engine_answer():
    # SGLang 0.5.16 /generate (tokenizer_manager: {"text", "output_ids", "meta_info"});
    # vLLM 0.26 /v1/completions with return_token_ids (CompletionResponseChoice.token_ids)
    assert greedy.output_ids("sglang", {"text": "t1 t2", "output_ids": [1, 2], "meta_info": {}}) == [1, 2]
    answer = {"choices": [{"text": "x", "token_ids": [3, 4], "prompt_token_ids": [9]}]}
    assert greedy.output_ids("vllm", answer) == [3, 4]
    for answer in ({"choices": []}, {"choices": [{"text": "x"}]}, "Internal Server Error"):
        with pytest.raises(RunError, match="no output ids"):
            greedy.output_ids("vllm", answer)
    with pytest.raises(RunError, match="not a list of ints"):
        greedy.output_ids("vllm", {"choices": [{"token_ids": None}]})


def test_first_difference():
    ref = [[1, 2, 3], [4, 5, 6]]
    assert greedy.first_difference(ref, [[1, 2, 3], [4, 5, 6]]) is None
    assert greedy.first_difference(ref, [[1, 2, 3], [4, 7, 6]]) == "prompt 1 differs at token 1"
    assert greedy.first_difference(ref, [[1, 2], [4, 5, 6]]) == "prompt 0 differs at token 2"
    assert greedy.first_difference(ref, [[1, 2, 3]]) == "1 outputs vs 2"
