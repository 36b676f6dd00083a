"""Human-readable results of an update: the old-class accuracy curve (PNG) and a markdown summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def read_curve(model_dir: Path) -> list[dict]:
    with open(Path(model_dir) / "curve.csv") as handle:
        return [{k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(handle)]


def plot_old_acc(runs: dict[str, Path], png: Path, title: str, ax=None,
                 references: dict[str, float | None] | None = None) -> None:
    """Old-class accuracy against iteration for each labelled model directory (one axis, or a new figure), with
    labelled horizontal reference lines (e.g. the parent's old-class accuracy) where their value is known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    for (label, model_dir), style in zip(runs.items(), ("-o", "-s", "-^", "-v"), strict=False):
        curve = read_curve(model_dir)
        ax.plot([r["iteration"] for r in curve], [r["old_acc"] for r in curve], style, ms=3, label=label)
    for (label, value), style in zip(((k, v) for k, v in (references or {}).items() if v is not None),
                                     (":", "--", "-."), strict=False):
        ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=f"{label} ({value:.1f})")
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
    """One row per labelled run with the metrics a reader compares (missing ones as None; FLOPs as TFLOPs)."""
    return [{"run": label, **{("train_tflops" if k == "train_flops" else k):
                              tflops(metrics.get(k)) if k == "train_flops" else metrics.get(k) for k in SUMMARY_KEYS}}
            for label, metrics in rows.items()]


def tflops(flops: float | None) -> float | None:
    return None if flops is None else round(flops / 1e12, 3)


def table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join("-" if v is None else str(v) for v in row) + " |" for row in rows)]


def _change(before: float | None, after: float | None) -> str | None:
    return None if before is None or after is None else f"{after - before:+.2f}"


def candidate_report(candidate_dir: Path, card: dict, gate: dict, out_dir: Path) -> Path:
    """report.md (+ curve.png) in `out_dir`: the candidate (its validated card, `load_card`) against the champion on
    the same test split, the gate's checks and the old-class curve; what a pull-request comment shows."""
    if gate["evidence"]["candidate"] != card["weights_sha256"]:
        raise ValueError(f"the gate result judged weights {gate['evidence']['candidate'][:12]}..., not "
                         f"{candidate_dir} ({card['weights_sha256'][:12]}...); run the gate on this candidate")
    metrics = json.loads((Path(candidate_dir) / "metrics.json").read_text())
    evidence, out_dir = gate["evidence"], Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    champion_old, per_class = evidence["champion_old_acc"], evidence["per_class_acc"]
    rows = [["old classes, among old outputs", champion_old, evidence["candidate_old_acc_among_old"]],
            ["old classes, all outputs", champion_old, evidence["candidate_old_acc"]],
            ["new classes", None, evidence["new_acc"]], ["all classes", None, evidence["all_acc"]]]
    lines = [f"# Candidate {gate['decision'].upper()}: {'; '.join(gate['reasons'])}", "",
             f"Candidate `{card['weights_sha256'][:12]}` ({card.get('method')}, {metrics.get('kind')}, data version "
             f"`{card.get('data_version') or 'unknown'}`) against champion `{evidence['champion'][:12]}` on "
             f"{evidence['old_test_images']} old-class and {evidence['new_test_images']} new-class test images. "
             f"Training: {metrics.get('iterations')} iterations, {tflops(metrics.get('train_flops'))} TFLOPs, "
             f"{metrics.get('wall_s')} s.", "", "## Accuracy (%)", "",
             *table(["", "champion", "candidate", "change"], [[*r, _change(r[1], r[2])] for r in rows]), "",
             *table(["class", "champion", "candidate", "change"],
                     [[name, evidence["champion_per_class_acc"].get(name), acc,
                       _change(evidence["champion_per_class_acc"].get(name), acc)] for name, acc in per_class.items()]),
             "", "## Gate", "", *gate_lines(gate)]
    if (Path(candidate_dir) / "curve.csv").is_file() and metrics.get("stability_gap") is not None:
        plot_old_acc({card.get("method") or "candidate": candidate_dir}, out_dir / "curve.png",
                     "old-class accuracy during the update", references={"parent": metrics.get("old_acc_before_eval")})
        lines += ["", f"Stability gap {metrics['stability_gap']} points (lowest old-class accuracy "
                      f"{metrics.get('min_old_acc')} at iteration {metrics.get('min_old_acc_iter')}).", "",
                  "![old-class accuracy during the update](curve.png)"]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return out_dir / "report.md"


def gate_lines(gate: dict) -> list[str]:
    """The gate's checks and the terms its decision was taken on, as the report and the model card show them."""
    evidence, rules = gate["evidence"], gate.get("rules", {})
    lines = [*table(["check", "value", "rule", "passed"],
                    [[c["check"], c["value"], c["rule"], "yes" if c["passed"] else "**no**"] for c in gate["checks"]]),
             "", f"Non-inferiority at a margin of {rules.get('old_acc_margin')} points (one-sided confidence "
                 f"{rules.get('confidence')}) on {evidence['old_test_images']} old-class test images, where the two "
                 f"models disagree on {evidence.get('discordance')}%: this split resolves drops of about "
                 f"{evidence.get('resolvable_drop')} points."]
    if reference := evidence.get("reference"):
        lines += ["", f"Against the chain's fixed reference `{reference['weights_sha256'][:12]}` (the last champion "
                      f"a retrain made): {reference['old_acc_drop']} points below it, "
                      f"{100 * reference['margin_used']:.0f}% of the margin used."]
    return lines


def markdown(title: str, lines: list[str], rows: list[dict], png_name: str | None) -> str:
    out = [f"# {title}", "", *lines, ""]
    if rows:
        out += table(list(rows[0]), [list(row.values()) for row in rows])
    if png_name:
        out += ["", f"![old-class accuracy during the update]({png_name})"]
    return "\n".join(out) + "\n"
