"""Logprob exactness: engine answers (shapes from vLLM 0.26.0 / SGLang 0.5.16 sources, recorded in
data/) parsed to one canonical form, compared bitwise, and the per-model verdict with its controls."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from integration.serve_ab import exactness, logprobs
from integration.serve_ab.errors import RunError

DATA = Path(__file__).with_name("data")
VLLM = json.loads((DATA / "vllm-0.26.0-completion-logprobs.json").read_text())
SGLANG = json.loads((DATA / "sglang-0.5.16-generate-logprobs.json").read_text())


def test_both_engines_parse_to_the_same_pairs():
    got = logprobs.parse("vllm", VLLM)
    assert got == logprobs.parse("sglang", SGLANG)
    assert got["output_ids"] == [11, 12] and got["prompt_chosen"] == [None, -11.5, -9.75]
    assert got["output_top"][1] == [[11, -1.2039728164672852], [12, -1.0986123085021973]]


def test_request_bodies_name_the_engines_fields():
    v = logprobs.request_body("vllm", "m", [1, 2], 24)
    assert (v["logprobs"], v["prompt_logprobs"], v["return_tokens_as_token_ids"], v["temperature"]) == (20, 5, True, 0)
    s = logprobs.request_body("sglang", "m", [1, 2], 24)
    assert (s["return_logprob"], s["top_logprobs_num"], s["logprob_start_len"]) == (True, 20, 0)
    assert [len(p) for p in logprobs.prompts()] == [16, 300, 1000, 2500] and logprobs.prompts() == logprobs.prompts()


def test_decoded_token_keys_are_refused():
    bad = copy.deepcopy(VLLM)
    bad["choices"][0]["logprobs"]["tokens"][0] = "t11"
    with pytest.raises(RunError, match="token_id:N"):
        logprobs.parse("vllm", bad)


def _record(answer=VLLM, engine="vllm"):
    return {"prompt_lengths": [3], "prompts": [logprobs.parse(engine, answer)]}


def test_json_keeps_every_bit_and_one_ulp_is_a_difference():
    ref = _record()
    assert logprobs.compare(ref, json.loads(json.dumps(ref))) is None
    other = copy.deepcopy(ref)
    x = other["prompts"][0]["output_top"][1][0][1]
    other["prompts"][0]["output_top"][1][0][1] = math.nextafter(x, 0.0)
    d = logprobs.compare(ref, json.loads(json.dumps(other)))
    assert d["first"] == "prompt 0 (3 tokens) output_top[1]" and d["positions"] == 1
    assert 0 < d["max_abs_diff"] < 1e-15
    other = copy.deepcopy(ref)
    other["prompts"][0]["chosen"][1] = math.nextafter(other["prompts"][0]["chosen"][1], 0.0)
    assert logprobs.compare(ref, json.loads(json.dumps(other)))["first"] == "prompt 0 (3 tokens) chosen[1]"


def test_first_difference_is_the_earliest_section_and_ids_count():
    ref = _record()
    other = copy.deepcopy(ref)
    other["prompts"][0]["prompt_top"][2][0][1] = -1.5   # prompt position 2: prefill differs
    other["prompts"][0]["output_ids"][1] = 13
    d = logprobs.compare(ref, other)
    assert d["first"] == "prompt 0 (3 tokens) prompt_top[2]" and d["positions"] == 2 and d["max_abs_diff"] == 0.375


def _rec(rid, variant, lp):
    return {"id": rid, "variant": variant, "logprobs": lp}


def _shifted(by):
    rec = _record()
    rec["prompts"][0]["chosen"][0] += by
    return rec


def test_verdict_off_controls_agree_and_on_differs_is_a_failure():
    same, diff = _record(), _shifted(1e-4)
    by = {"off": [_rec("a-off", "off", same), _rec("b-off", "off", same), _rec("c-off", "off", same)],
          "on": [_rec("a-on", "on", same), _rec("b-on", "on", diff)]}
    rows, failures = exactness.verdict(["off", "on"], by)
    assert "| off (control) | 3 of 3 pairs identical |" in rows
    assert rows[-1].startswith("| on | 3 of 6 pairs identical; worst b-on vs a-off: first at prompt 0 (3 tokens) "
                               "chosen[0], differing positions 1, max abs diff 0.0001")
    assert failures == ["FAILURE: on: 3 of 6 pairs differ while the 3 off-vs-off pairs are identical (first: b-on vs "
                        "a-off at prompt 0 (3 tokens) chosen[0])"]


def test_verdict_with_disagreeing_controls_needs_each_on_server_in_an_off_class():
    one, two = _record(), _shifted(1e-3)
    offs = [_rec("a-off", "off", one), _rec("b-off", "off", two), _rec("c-off", "off", one)]
    rows, failures = exactness.verdict(["off", "on"], {"off": offs, "on": [_rec("a-on", "on", two),
                                                                           _rec("b-on", "on", one)]})
    assert rows[2].startswith("| off (control) | 1 of 3 pairs identical")
    assert failures == ["consistent: on: each of its 2 servers is bitwise identical to one of the 3 off servers, "
                        "which form 2 bitwise classes among themselves (the engine's own difference across fresh "
                        "servers): 3 of 6 pairs differ only as off servers differ from each other"]
    rows, failures = exactness.verdict(["off", "on"], {"off": offs, "on": [_rec("a-on", "on", one),
                                                                           _rec("b-on", "on", _shifted(2e-3))]})
    assert failures == ["no verdict: on: b-on bitwise equal to none of the 3 off servers, which form 2 classes among "
                        "themselves; 1 of 2 on servers equal an off server, 2 of 3 off servers equal another "
                        "(one-sided Fisher p = 0.7): the engine's own difference across fresh servers is as large"]


def test_verdict_on_servers_reproducing_off_ones_less_often_than_off_ones_do_is_a_failure():
    """4 of 5 off servers are one class, the fifth its own; 5 on servers each new: p = C(6,5)/C(10,5)."""
    offs = [_rec(f"{i}-off", "off", _record()) for i in "abcd"] + [_rec("e-off", "off", _shifted(1e-3))]
    ons = [_rec(f"{i}-on", "on", _shifted(2e-3 * (n + 1))) for n, i in enumerate("abcde")]
    _, failures = exactness.verdict(["off", "on"], {"off": offs, "on": ons})
    assert failures == ["FAILURE: on: a-on, b-on, c-on, d-on, e-on bitwise equal to none of the 5 off servers: "
                        "0 of 5 on servers equal an off server, 4 of 5 off servers equal another (one-sided Fisher "
                        f"p = {6 / 252:.3g})"]


def test_verdict_with_one_off_server_blames_nobody():
    by = {"off": [_rec("a-off", "off", _record())], "on": [_rec("a-on", "on", _shifted(2e-3))]}
    rows, failures = exactness.verdict(["off", "on"], by)
    assert rows[2] == "| off (control) | - (no pair) |"
    assert failures == ["unexplained: on differs from off in 1 of 1 pairs, but there are fewer than 2 off servers: "
                        "no verdict on the plugin"]


def test_verdict_all_identical_has_no_failure_and_old_records_say_ids_only():
    same = _record()
    by = {"off": [_rec("a-off", "off", same), _rec("b-off", "off", same)], "on": [_rec("a-on", "on", same)]}
    rows, failures = exactness.verdict(["off", "on"], by)
    assert rows[2:] == ["| off (control) | 1 of 1 pairs identical |", "| on | 2 of 2 pairs identical |"]
    assert failures == []
    old = {"off": [{"id": "x", "greedy": {"output_ids": [[1, 2]]}}], "on": [{"id": "y", "greedy": {"output_ids": [[1, 3]]}}]}
    rows, failures = exactness.verdict(["off", "on"], old)
    assert rows[-1] == "| on | greedy ids only (older record): NO in 1 of 1: y: prompt 0 differs at token 1 |"


def test_each_verdict_names_its_kind_which_leads_its_line():
    """The README headline shows a verdict's kind alone (``table.headline``): a field, not text read back."""
    one, two = _record(), _shifted(1e-3)
    agree = [_rec("a-off", "off", one), _rec("b-off", "off", one)]
    classes = [_rec("a-off", "off", one), _rec("b-off", "off", two), _rec("c-off", "off", one)]
    cases = {None: {"off": agree, "on": [_rec("a-on", "on", one)]},
             "FAILURE": {"off": agree, "on": [_rec("a-on", "on", two)]},
             "unexplained": {"off": agree[:1], "on": [_rec("a-on", "on", two)]},
             "consistent": {"off": classes, "on": [_rec("a-on", "on", two)]},
             "no verdict": {"off": classes, "on": [_rec("a-on", "on", _shifted(2e-3))]}}
    for kind, by in cases.items():
        judged = exactness.judge(["off", "on"], by)
        assert (judged["on"].kind, judged["off"].kind, judged["off"].line) == (kind, None, None)
        assert judged["on"].line is None if kind is None else judged["on"].line.startswith(f"{kind}: on")
