"""SGLang PR #20943's workloads, and how a plan shortens them to fit the GPU machine's time limits.

Only output lengths and prompt counts shrink: the input lengths and concurrencies are the shape of
each point and stay; every workload keeps its own seed, so every variant sees the same prompts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import UsageError

PROMPTS_PER_CONCURRENCY = 4  # the PR's prompt count: four waves at the workload's concurrency


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str
    input_len: int
    output_len: int
    concurrency: int
    seed: int  # distinct per workload so no workload hits another's prefix cache
    num_prompts: int

    @property
    def seed_pr(self) -> "Workload":
        return SEED_PR[self.name]

    def label(self) -> str:
        full = self.seed_pr
        out = _tokens(self.output_len)
        if self.output_len != full.output_len:
            out += f" of {_tokens(full.output_len)}"
        return f"BS={self.concurrency} {self.kind} (input={_tokens(self.input_len)}, output={out})"

    def shortened(self) -> str | None:
        """What differs from the PR's point, or None."""
        full, parts = self.seed_pr, []
        if self.output_len != full.output_len:
            parts.append(f"output {full.output_len} -> {self.output_len}")
        if self.num_prompts != full.num_prompts:
            parts.append(f"prompts {full.num_prompts} -> {self.num_prompts}")
        return ", ".join(parts) or None

    def longest_request(self) -> int:
        return self.input_len + self.output_len


def _tokens(n: int) -> str:
    return f"{n // 1000}K" if n >= 1000 and n % 1000 == 0 else str(n)


def _pr(name: str, kind: str, input_len: int, output_len: int, concurrency: int, seed: int) -> Workload:
    return Workload(name, kind, input_len, output_len, concurrency, seed, PROMPTS_PER_CONCURRENCY * concurrency)


# SGLang PR #20943 / #21104: Qwen3-32B TP4 on 4xH200, 3 runs, fresh server each.
SEED_PR = {
    w.name: w
    for w in (
        _pr("decode-c1", "Decode-heavy", 500, 8000, 1, 101),
        _pr("decode-c4", "Decode-heavy", 500, 8000, 4, 102),
        _pr("decode-c16", "Decode-heavy", 500, 8000, 16, 103),
        _pr("balanced-c8", "Balanced", 2000, 2000, 8, 104),
        _pr("prefill-c8", "Prefill-heavy", 8000, 500, 8, 105),
    )
}

OVERRIDE_KEYS = {"output": "output_len", "prompts": "num_prompts"}


def scaled(w: Workload, scale: float) -> Workload:
    """Output length and prompt count times ``scale``; at least one token and one full wave."""
    return dataclasses.replace(w, output_len=max(1, round(w.output_len * scale)),
                               num_prompts=max(w.concurrency, round(w.num_prompts * scale)))


def _override(spec: str) -> tuple[str, dict[str, int]]:
    accepted = "accepted: NAME:output=N,prompts=M (either key, whole numbers >= 1)"
    name, sep, body = spec.partition(":")
    if not sep or name not in SEED_PR:
        raise UsageError(f"--override {spec!r}: unknown workload {name!r}; {accepted} with NAME one of "
                         f"{', '.join(SEED_PR)}")
    values = {}
    for item in body.split(","):
        key, _, raw = item.partition("=")
        if key.strip() not in OVERRIDE_KEYS or not raw.strip().isdigit() or int(raw) < 1:
            raise UsageError(f"--override {spec!r}: cannot read {item!r}; {accepted}")
        values[OVERRIDE_KEYS[key.strip()]] = int(raw)
    return name, values


def select(names: str, scale: float, overrides: list[str]) -> list[Workload]:
    """The plan's workloads: ``names`` ("all" or a comma list), scaled, then per-workload overrides."""
    chosen = list(SEED_PR) if names.strip() == "all" else [n.strip() for n in names.split(",")]
    unknown = [n for n in chosen if n not in SEED_PR]
    if unknown or not chosen:
        raise UsageError(f"--workloads: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                         f"accepted: all or a comma list of {', '.join(SEED_PR)}")
    if not scale > 0:
        raise UsageError(f"--scale must be a number > 0 (got {scale}); 1 = the PR's lengths, 0.1 = a tenth")
    picked = {n: scaled(SEED_PR[n], scale) for n in dict.fromkeys(chosen)}
    for spec in overrides:
        name, values = _override(spec)
        if name not in picked:
            raise UsageError(f"--override {spec!r}: {name} is not among --workloads ({', '.join(picked)})")
        picked[name] = dataclasses.replace(picked[name], **values)
    return list(picked.values())
