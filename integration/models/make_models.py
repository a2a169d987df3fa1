#!/usr/bin/env python3
"""Write the model folders the real-engine runs serve with ``--load-format dummy`` (no weights).

    python3 integration/models/make_models.py [--out /tmp/models] [NAME ...]    (default: every model)

Why: the GPU machine has no network, so no hub download; the engines need only a config and a
tokenizer to start with random weights. For each ``integration/models/configs/<name>.json``
(a config.json) this writes ``<out>/<name>/`` with:

- config.json: the JSON as shipped;
- generation_config.json: bos/eos/pad only and ``do_sample: false``, so no sampling defaults leak
  into requests (the runner sends temperature 0 anyway);
- tokenizer.json + tokenizer_config.json: a local ``tokenizers`` WordLevel tokenizer of exactly
  151936 entries (every shipped config's vocab_size), so every id a model emits decodes and
  decode -> encode round-trips (what the benchmarks' random-ids prompts rely on). Qwen3's added
  tokens sit at their real ids (<|endoftext|> = bos/pad 151643, <|im_end|> = eos 151645),
  ``<unk>`` at 151669 takes any other word, ``t<i>`` names every other id.

``--weights`` also writes seeded normal(0, 0.02) weights (``seeded_weights.py``) for the models in
``SEEDED``, which the runner then serves with the default loader instead of dummy weights.

Needs ``tokenizers`` (on the GPU machine); run it with or without an engine's env.sh sourced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VOCAB = 151936
UNK_ID = 151669
BOS_ID, EOS_ID = 151643, 151645
SEEDED = ("gemma-3-1b-like",)  # small models that get real-scale random weights with --weights
GENERATION_CONFIG = {"bos_token_id": BOS_ID, "eos_token_id": [EOS_ID, BOS_ID], "pad_token_id": BOS_ID, "do_sample": False}

# Qwen3's added tokens (id, content, special), as in its tokenizer.json
QWEN3_ADDED = [
    (151643, "<|endoftext|>", True), (151644, "<|im_start|>", True), (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True), (151647, "<|object_ref_end|>", True), (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True), (151650, "<|quad_start|>", True), (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True), (151653, "<|vision_end|>", True), (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True), (151656, "<|video_pad|>", True), (151657, "<tool_call>", False),
    (151658, "</tool_call>", False), (151659, "<|fim_prefix|>", False), (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False), (151662, "<|fim_pad|>", False), (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False), (151665, "<tool_response>", False), (151666, "</tool_response>", False),
    (151667, "<think>", False), (151668, "</think>", False),
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def shipped() -> dict[str, dict]:
    """name -> config of every model shipped in configs/."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((HERE / "configs").glob("*.json"))}


def build_tokenizer():
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    names = {i: f"t{i}" for i in range(VOCAB)}
    for tid, content, _ in QWEN3_ADDED:
        names[tid] = content
    names[UNK_ID] = "<unk>"
    tok = Tokenizer(models.WordLevel(vocab={name: i for i, name in names.items()}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # register the added tokens at their ids (already in the vocab, so the size stays VOCAB)
    tok.add_tokens([AddedToken(c, special=False, normalized=False) for _, c, s in QWEN3_ADDED if not s])
    tok.add_special_tokens([AddedToken(c, special=True, normalized=False) for _, c, s in QWEN3_ADDED if s]
                           + [AddedToken("<unk>", special=True, normalized=False)])
    size = tok.get_vocab_size(with_added_tokens=True)
    if size != VOCAB or any(tok.token_to_id(c) != tid for tid, c, _ in QWEN3_ADDED):
        raise SystemExit(f"make_models.py: the tokenizer came out with {size} entries or moved an added token; "
                         f"expected {VOCAB} with Qwen3's added tokens at their ids (tokenizers version?)")
    return tok


def tokenizer_config() -> dict:
    added = {str(tid): {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": special}
             for tid, content, special in QWEN3_ADDED + [(UNK_ID, "<unk>", True)]}
    return {
        "add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": added, "bos_token": "<|endoftext|>", "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
        "model_max_length": 131072, "pad_token": "<|endoftext|>", "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>",
    }


def main(argv: list[str] | None = None) -> int:
    models = shipped()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(models)}")
    ap.add_argument("--out", type=Path, default=Path("/tmp/models"))
    ap.add_argument("--weights", action="store_true", help=f"also seeded weights for {', '.join(SEEDED)} (torch)")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in models]
    if unknown:
        print(f"make_models.py: unknown model {', '.join(unknown)}; accepted: {', '.join(models)}", file=sys.stderr)
        return 2
    wrong = [n for n, c in models.items() if c["vocab_size"] != VOCAB]
    if wrong:
        print(f"make_models.py: vocab_size of {', '.join(wrong)} is not {VOCAB}, the only tokenizer size "
              f"this script makes", file=sys.stderr)
        return 2
    tok = build_tokenizer()
    for name in args.names or list(models):
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(models[name], indent=1) + "\n")
        (out / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=1) + "\n")
        tok.save(str(out / "tokenizer.json"))
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=1) + "\n")
        if args.weights and name in SEEDED:
            sys.path.insert(0, str(HERE))
            import seeded_weights

            print(seeded_weights.write(out, models[name]))
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
