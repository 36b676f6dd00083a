"""Human-readable results of an update: the old-class accuracy curve (PNG) and a markdown summary."""

from __future__ import annotations

import csv
from pathlib import Path


def read_curve(model_dir: Path) -> list[dict]:
    with open(Path(model_dir) / "curve.csv") as handle:
        return [{k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(handle)]


def plot_old_acc(runs: dict[str, Path], png: Path, title: str, ax=None) -> None:
    """Old-class accuracy against iteration for each labelled model directory (one axis, or a new figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    for (label, model_dir), style in zip(runs.items(), ("-o", "-s", "-^", "-v"), strict=False):
        curve = read_curve(model_dir)
        ax.plot([r["iteration"] for r in curve], [r["old_acc"] for r in curve], style, ms=3, label=label)
    ax.set(title=title, xlabel="iteration", ylabel="old-class accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    if fig is not None:
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        plt.close(fig)


SUMMARY_KEYS = ["method", "kind", "old_acc_before", "min_old_acc", "stability_gap", "transient_gap",
                "final_old_acc", "final_new_acc", "final_all_acc", "negative_flip_rate", "iterations",
                "train_flops", "wall_s"]


def metrics_table(rows: dict[str, dict]) -> list[dict]:
    """One row per labelled run with the metrics a reader compares (missing ones as None)."""
    return [{"run": label, **{k: metrics.get(k) for k in SUMMARY_KEYS}} for label, metrics in rows.items()]


def markdown(title: str, lines: list[str], table: list[dict], png_name: str | None) -> str:
    out = [f"# {title}", "", *lines, ""]
    if table:
        keys = list(table[0])
        out += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        out += ["| " + " | ".join("-" if row[k] is None else str(row[k]) for k in keys) + " |" for row in table]
    if png_name:
        out += ["", f"![old-class accuracy during the update]({png_name})"]
    return "\n".join(out) + "\n"
