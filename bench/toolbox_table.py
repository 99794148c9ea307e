"""The README's toolbox table (issue 15) from finished run folders: one row per run.

    python bench/toolbox_table.py runs/instruction-lora/<id> runs/prompt-tuning/<id> ...

A folder under `external/` (written by `ftpipe evaluate --model`) gets the training time of the run
its model came from when `--trained-by RUN` names it. Every figure is read from the run's own
report.json, manifest.json and parameters.json; nothing is computed here but the formatting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _read(folder: Path, name: str) -> dict:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else {}


def row(folder: Path, trained_by: Path | None = None) -> str:
    report = _read(folder, "report.json")
    trained = trained_by or folder
    params = _read(trained, "parameters.json")
    train_s = _read(trained, "manifest.json").get("timings", {}).get("train")
    target = next(t for t in report["tasks"] if t["role"] == "target")
    held = [t for t in report["tasks"] if t["role"] == "held_out" and t.get("forgetting") is not None]
    worst = max(held, key=lambda t: t["forgetting"], default=None)  # forgetting: relative drop, (base - tuned) / base
    worst_text = (f"{worst['task']} {-worst['forgetting']:+.1%} ({worst['verdict']})" if worst
                  else "not scored (frozen body)" if report.get("method") == "classification_head" else "-")
    delta = f"{target['delta']:+.3f} [{target['ci_low']:+.3f}, {target['ci_high']:+.3f}]"
    trainable = params.get("trainable")
    cells = [report.get("method", "?"), report.get("adapter") or "-", f"{trainable:,}" if trainable else "?",
             f"{train_s:.0f} s" if train_s else "?", f"{target['task']} {target['metric']}",
             f"{target['base']:.3f} -> {target['tuned']:.3f}", delta, worst_text]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--trained-by", type=Path, help="The run that trained the model of an external evaluation.")
    args = parser.parse_args()
    print("| method | adapter | trainable | train time | target | base -> tuned | delta [95% CI] | worst held-out drop |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.runs:
        print(row(folder, args.trained_by if "external" in folder.parts else None))


if __name__ == "__main__":
    main()
