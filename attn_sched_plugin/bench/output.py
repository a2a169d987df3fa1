"""Bench output: a table on the terminal, JSON for the record, a PNG of the saving vs batch size."""

from __future__ import annotations

import json
from pathlib import Path

from .run import derived


def table(results: list[dict]) -> str:
    """A plain-text table (rich renders it when installed); one row per point."""
    header = ("preset", "mode", "bs", "ctx", "fa3 us", "engine us", "plugin us", "saved us", "saved %",
              "vs engine us", "prep/step a|b|c", "exact", "verdict")
    rows = []
    for r in results:
        d, v = derived(r), r["variants"]
        rows.append((
            r["preset"], r["mode"], str(r["batch"]), str(r["context"]),
            *(f"{v[n]['gpu_us']['median']:.1f}" for n in ("fa3", "engine", "plugin")),
            f"{d['saved_us']:.1f}", f"{d['saved_pct']:.2f}", f"{d['saved_vs_engine_us']:.1f}",
            "|".join(str(v[n]["prepare_launches"]) for n in ("fa3", "engine", "plugin")),
            "yes" if all(r["bitwise_equal_to_fa3"].values()) else "NO",
            "noise" if d["noise"] else "",
        ))
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        return "\n".join("  ".join(str(x).rjust(w) for x, w in zip(row, widths)) for row in (header, *rows))
    t = Table(title="attn-sched bench: median step time (CUDA events)")
    for h in header:
        t.add_column(h, justify="right")
    for row in rows:
        t.add_row(*row)
    console = Console(width=200, record=True)
    with console.capture() as cap:
        console.print(t)
    return cap.get()


def write_json(path: Path, env: dict, results: list[dict]) -> None:
    path.write_text(json.dumps({"environment": env, "results": results,
                                "derived": [derived(r) for r in results]}, indent=1))


def plot(path: Path, results: list[dict], title: str) -> None:
    """Saved us/step and % vs batch size, one line per (preset, mode, context)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_us, ax_pct) = plt.subplots(1, 2, figsize=(13, 5))
    series: dict[tuple, list] = {}
    for r in results:
        series.setdefault((r["preset"], r["mode"], r["context"]), []).append((r["batch"], derived(r)))
    for (preset, mode, context), pts in sorted(series.items()):
        pts.sort()
        label = f"{preset} {mode} ctx {context}"
        ax_us.plot([b for b, _ in pts], [d["saved_us"] for _, d in pts], marker="o", label=label)
        ax_pct.plot([b for b, _ in pts], [d["saved_pct"] for _, d in pts], marker="o", label=label)
    for ax, ylabel in ((ax_us, "saved us / step vs (a)"), (ax_pct, "saved % of step vs (a)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.grid(True, alpha=0.3)
    ax_pct.legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
