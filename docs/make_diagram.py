#!/usr/bin/env python3
"""Write docs/how-it-works.svg, the data-path diagram shown in the README and docs/how-it-works.md.

Plain Python that writes SVG text, so the picture needs no graphviz and the committed
file can be checked byte for byte against this script (tests/integration/test_diagram.py).
Run: python docs/make_diagram.py
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

OUT = Path(__file__).with_name("how-it-works.svg")

WIDTH, HEIGHT = 980, 720
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
LINE = 17  # px between body lines
MAIN, SIDE, HIT = "#e8f0fe", "#fdecea", "#e6f4ea"


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    title: str
    lines: tuple[str, ...]
    fill: str = MAIN

    @property
    def h(self) -> int:
        return 34 + LINE * len(self.lines)

    @property
    def cx(self) -> int:
        return self.x + self.w // 2

    @property
    def bottom(self) -> int:
        return self.y + self.h


def _box(b: Box) -> list[str]:
    out = [
        (f'<rect x="{b.x}" y="{b.y}" width="{b.w}" height="{b.h}" rx="8" '
         f'fill="{b.fill}" stroke="#3c4043" stroke-width="1.2"/>'),
        f'<text x="{b.x + 12}" y="{b.y + 21}" class="t">{escape(b.title)}</text>',
    ]
    for i, line in enumerate(b.lines):
        out.append(
            f'<text x="{b.x + 12}" y="{b.y + 39 + LINE * i}" class="b">{escape(line)}</text>'
        )
    return out


def _arrow(points: list[tuple[int, int]], label: str = "", at: tuple[int, int] | None = None) -> list[str]:
    path = " ".join(f"{x},{y}" for x, y in points)
    out = [f'<polyline points="{path}" fill="none" stroke="#3c4043" stroke-width="1.5" marker-end="url(#arrow)"/>']
    if label and at:
        out.append(f'<text x="{at[0]}" y="{at[1]}" class="l">{escape(label)}</text>')
    return out


def render() -> str:
    """Return the whole SVG document as text (deterministic: no dates, no randomness)."""
    x, w = 90, 480
    call = Box(x, 60, w, "1. FA3 call from the engine", (
        "flash_attn_with_kvcache (SGLang) / flash_attn_varlen_func (vLLM),",
        "wrapped in place; the original function stays reachable.",
    ))
    desc = Box(x, call.bottom + 40, w, "2. Descriptor", (
        "Exact scheduler parameters derived from the call's own",
        "arguments: batch, seqlens, heads, head dims, page size, causal,",
        "window, softcap, num_splits, pack_gqa ... nothing guessed.",
    ))
    key = Box(x, desc.bottom + 40, w, "3. Key", (
        "params + identity of the batch tensors + step + capture context",
        "+ device / stream + FA3 build",
    ))
    cache = Box(x, key.bottom + 40, w, "4. Per-step cache", (
        "Emptied when the engine starts a new step (metadata / capture init).",
    ))
    meta = Box(x, cache.bottom + 40, w, "5. get_scheduler_metadata of the SAME FA3 build", (
        "Computed once per key (cache miss). Inside a CUDA-graph capture",
        "the call is recorded in the graph and runs again at every replay.",
    ))
    final = Box(x, meta.bottom + 40, w, "6. Original FA3 call with scheduler_metadata=", (
        "Same arguments plus the metadata; the kernel skips its prepare.",
    ), fill=HIT)
    side = Box(660, desc.y, 300, "Cannot prove it is exact", (
        "metadata already passed (engine-native),",
        "an argument not understood, a build",
        "without get_scheduler_metadata, or an",
        "FA3 kernel from another build",
    ), fill=SIDE)
    through = Box(660, meta.y, 300, "Pass through untouched", (
        "Original FA3 call, arguments unchanged;",
        "counted by reason in the stats.",
    ), fill=SIDE)

    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
         f'viewBox="0 0 {WIDTH} {HEIGHT}">'),
        "<defs>",
        ('<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
         'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#3c4043"/></marker>'),
        (f"<style>text{{font-family:{FONT};fill:#202124}} .t{{font-size:14px;font-weight:bold}} "
         ".b{font-size:12px} .l{font-size:12px;font-style:italic} .h{font-size:18px;font-weight:bold}</style>"),
        "</defs>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        '<text x="30" y="34" class="h">attn-sched-plugin: one FA3 call, from the engine to the kernel</text>',
    ]
    for b in (call, desc, key, cache, meta, final, side, through):
        parts += _box(b)
    for upper, lower in ((call, desc), (desc, key), (key, cache), (meta, final)):
        parts += _arrow([(upper.cx, upper.bottom), (upper.cx, lower.y)])
    parts += _arrow([(x + w, call.y + 30), (side.cx, call.y + 30), (side.cx, side.y)],
                    "already has metadata", (x + w + 10, call.y + 24))
    parts += _arrow([(x + w, desc.y + desc.h // 2), (side.x, desc.y + desc.h // 2)],
                    "cannot prove", (x + w + 8, desc.y + desc.h // 2 - 6))
    parts += _arrow([(side.cx, side.bottom), (side.cx, through.y)])
    hit_y = cache.y + cache.h // 2
    parts += _arrow([(x, hit_y), (x - 40, hit_y), (x - 40, final.y + 25), (x, final.y + 25)],
                    "hit", (x - 68, (hit_y + final.y) // 2))
    parts += _arrow([(cache.cx + 60, cache.bottom), (cache.cx + 60, meta.y)],
                    "miss", (cache.cx + 68, cache.bottom + 25))
    parts.append(
        f'<text x="30" y="{final.bottom + 40}" class="b">Per step: one metadata computation per '
        "distinct key, instead of one prepare launch inside every attention layer's call.</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
