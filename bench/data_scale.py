"""Data at scale: `prepare_data` on 100,000 training rows with a 100k x 10k leakage check, against
the floor of just reading those rows and batch-tokenizing them with the fast tokenizer.

Target (issue 16): prepare within 3x the floor, peak memory <= 3 GB. Each side runs in its own
process (peak RSS is per process), the floor first, then prepare, `--rounds` times alternating.

    python bench/data_scale.py [--rows 100000] [--eval 10000] [--rounds 2]   -> bench/results/data.json
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, log  # noqa: E402

WORDS = ("account billing card charge courier delivery device email error invoice laptop login mobile order "
         "parcel password payment phone printer refund router screen shipping subscription ticket tracking "
         "update warranty wifi address battery cable code customer damaged delay driver help issue late lost "
         "message missing monthly network pending plan reset return settings slow support tablet upgrade").split()
LABELS = ["billing", "shipping", "technical", "account", "refund"]
PLANTED = 40  # evaluated items copied (with one word changed) from training rows: the check must find them all


def write_data(folder: Path, rows: int, items: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    train = [{"message": " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 28))) + f" ref {i}",
              "label": rng.choice(LABELS)} for i in range(rows)]
    probe = [{"question": "Which word comes next: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 20)))
              + f" ({j})?", "answer": rng.choice(WORDS)} for j in range(items - PLANTED)]
    for k in range(PLANTED):  # near duplicates of training rows: one word changed
        words = train[k * 997 % rows]["message"].split()
        words[-1] = "changed"  # one n-gram of the row differs: a near duplicate at any length
        probe.append({"question": " ".join(words), "answer": "x"})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (folder / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in probe))
    spec = folder / "spec.yaml"
    spec.write_text(f"""\
name: scale
base_model: smollm2-135m-instruct
tasks:
  - name: tickets
    source: train.jsonl
    kind: classification
    labels: [{", ".join(LABELS)}]
    prompt: "Route this support ticket: {{{{ message }}}}"
    target: "{{{{ label }}}}"
data:
  validation_fraction: 0.0
  test_fraction: 0.01
  leakage: {{action: drop}}
evaluation:
  max_items: {items}
  held_out:
    - {{name: probe, source: probe.jsonl, kind: exact_match, prompt: "{{{{ question }}}}", target: "{{{{ answer }}}}"}}
""")
    return spec


FLOOR = """
import json, sys, time, resource
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[2])
start = time.perf_counter()
texts = []
for name in ("train.jsonl", "probe.jsonl"):
    for line in open(sys.argv[1] + "/" + name, encoding="utf-8"):
        row = json.loads(line)
        texts += [str(v) for v in row.values()]
ids = tok(texts, add_special_tokens=False)["input_ids"]
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "texts": len(texts), "tokens": sum(map(len, ids))}))
"""

PREPARE = """
import json, sys, time, resource
from ftpipe.data import prepare_data, validate_spec
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[2])
loaded = validate_spec(sys.argv[1] + "/spec.yaml")
start = time.perf_counter()
prepared = prepare_data(loaded, tok, 8192)
seconds = time.perf_counter() - start
leak = prepared.leakage["tasks"]["probe"]
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train_rows": sum(1 for r in prepared.train_rows if r["split"] == "train"),
                  "evaluated": sum(len(t.eval_items) for t in prepared.eval_tasks()),
                  "leaks_found": leak["exact"] + leak["near"]}))
"""


def side(code: str, folder: Path, model: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(model)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--eval", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from ftpipe.models import pull

    model = pull("smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_data(folder, args.rows, args.eval)
        floors, prepares = [], []
        for r in range(args.rounds):
            floors.append(side(FLOOR, folder, model))
            prepares.append(side(PREPARE, folder, model))
            log(f"round {r + 1}: floor {floors[-1]['seconds']:.1f}s, prepare {prepares[-1]['seconds']:.1f}s "
                f"(peak {prepares[-1]['peak_mb']:.0f} MB), leaks found {prepares[-1]['leaks_found']}/{PLANTED}")
    floor = min(f["seconds"] for f in floors)
    prepare = min(p["seconds"] for p in prepares)
    result = {"rows": args.rows, "evaluated_items": args.eval, "rounds": args.rounds, "floor": floors, "prepare": prepares,
              "ratio_prepare_over_floor": prepare / floor, "peak_mb": max(p["peak_mb"] for p in prepares),
              "planted_leaks": PLANTED, "target_ratio": 3.0, "target_peak_mb": 3072,
              "machine_maxrss_note": "ru_maxrss of each side's own process", "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "data.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"prepare / floor = {result['ratio_prepare_over_floor']:.2f} (target <= 3), peak {result['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
