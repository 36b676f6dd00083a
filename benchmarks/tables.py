"""The results tables of the docs, generated from the results files: each table sits in a markdown file between
`<!-- table:NAME -->` and `<!-- /table:NAME -->`, and this command rewrites every such block from the file it is
built from (`--check` fails instead when one is stale; the test suite runs it).

    .venv/bin/python -m benchmarks.tables            # rewrite the tables in README.md
    .venv/bin/python -m benchmarks.tables --check    # exit 1 naming each stale table
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

RESULTS = Path("benchmarks/results")
DOCS = [Path("README.md")]


def _num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def make_run(results: dict) -> str:
    """`make run`'s summary (flows/demo.py --results): every run of every version and what the gate decided."""
    lines = [f"Commit {results['provenance']['commit']}, params {results['provenance']['params_hash']}, "
             f"{results['provenance']['cores']} cores, {results['provenance']['wall_s'] / 60:.1f} min.", "",
             "| version | run | stability gap | old | new | all | iterations | train TFLOPs | wall s | gate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for version, result in results["versions"].items():
        gate = result.get("gate") or {}
        for number, (label, m) in enumerate(result["metrics"].items()):
            if number == 0:
                evidence = gate.get("evidence", {})
                bound = (f"; old-class drop {evidence['old_acc_drop']:+.2f}, bound {evidence['old_acc_drop_bound']}"
                         if "old_acc_drop_bound" in evidence else "")
                decided = f"**{result['status']}**, {result['version']}{bound}"
            else:
                decided = "(report only)" if "shadow" in label else gate.get("decision", "")
            lines.append(f"| {version} | {label} | {_num(m.get('stability_gap'))} | {m['final_old_acc']} | "
                         f"{_num(m['final_new_acc'])} | {m['final_all_acc']} | {m['iterations']} | "
                         f"{m['train_flops'] / 1e12:.2f} | {m['wall_s']:.1f} | {decided} |")
    return "\n".join(lines)


def production(results: dict) -> str:
    """The production stream's versions (benchmarks/production.py)."""
    return _section(RESULTS / "production.md", "| version ")


def production_screen(results: dict) -> str:
    """The update session's settings, screened on the production stream."""
    return _section(RESULTS / "production_screen.md", "| case ")


def _section(path: Path, header: str) -> str:
    """The first table of a generated results file, from its header row to its last row."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


TABLES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "make_run": ("make_run.json", make_run),
    "production": ("production.json", production),
    "production_screen": ("production_screen.json", production_screen),
}
BLOCK = re.compile(r"(<!-- table:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(\n<!-- /table:(?P=name) -->)", re.S)


def render(text: str) -> tuple[str, list[str]]:
    """`text` with every table block rebuilt, and the names of the blocks that changed."""
    stale = []

    def rebuild(match: re.Match) -> str:
        source, build = TABLES[match["name"]]
        body = build(json.loads((RESULTS / source).read_text()))
        if body != match["body"]:
            stale.append(match["name"])
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(rebuild, text), stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when a table is stale, writing nothing")
    args = parser.parse_args(argv)
    stale_anywhere = []
    for doc in DOCS:
        text, stale = render(doc.read_text())
        stale_anywhere += [f"{doc}: {name}" for name in stale]
        if stale and not args.check:
            doc.write_text(text)
    if args.check and stale_anywhere:
        print("stale tables (run `python -m benchmarks.tables`):\n  " + "\n  ".join(stale_anywhere), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
