"""One learning-versus-forgetting frontier over several sweeps of the demo (issue 14's README chart).

Each sweep keeps its own Optuna study; this reads the finished trials of the studies named, numbers them
in order, draws every trial on one chart with ftpipe's own frontier renderer (Pareto front over all of
them, the forgetting tolerance, the recommendation) and prints the table.

    python bench/demo_frontier.py runs/demo-sweep/sweeps/first-grid-lr-replay:demo-sweep:"general replay" \
        ... --out docs/img/demo_frontier.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ftpipe.lifecycle.sweep import optuna_storage, pareto_front, recommend, render_frontier, sweep_markdown, trial_rows

TOLERANCE = 0.10


def trials_of(folder: Path, study: str, label: str) -> list[dict]:
    import optuna

    loaded = optuna.load_study(study_name=study, storage=optuna_storage(f"sqlite:///{folder / 'optuna.db'}", 60))
    done = [r for r in trial_rows(loaded) if r["state"] == "complete"]
    return [{**r, "params": {"sweep": label, **r["params"]}} for r in done]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="FOLDER:STUDY:LABEL (the sweep folder holding optuna.db)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    done = []
    for text in args.studies:
        folder, study, label = text.split(":", 2)
        done += trials_of(Path(folder), study, label)
    for number, trial in enumerate(done):
        trial["number"] = number
    front = pareto_front([(t["learning"], t["forgetting"]) for t in done])
    for k, t in enumerate(done):
        t["pareto"] = k in front
    best, why = recommend(done, TOLERANCE)
    report = {"pipeline": "demo-sweep", "study": "all sweeps", "sampler": "grid", "trials": done,
              "pareto": [done[i]["number"] for i in front], "recommended": done[best]["number"] if best is not None else None,
              "recommendation": why, "max_forgetting": TOLERANCE, "confidence": 0.95}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    render_frontier(report, args.out)
    print(sweep_markdown(report).replace("frontier.png", str(args.out)))


if __name__ == "__main__":
    main()
