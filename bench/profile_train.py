"""Where ftpipe's training step time goes: py-spy samples of one ftpipe training trial (not part of `make bench`).

Runs `bench/train_ab.py --side ftpipe` under `py-spy record --format raw` (collapsed stacks, 100 Hz,
Python frames; time spent in torch's C++ is charged to the Python line that called it), keeps only the
samples taken inside Ludwig's training loop (`_train_loop`), and reports the share of those samples
spent under each part of a step, plus the heaviest Ludwig functions. Writes bench/results/profile_train.json.

  python bench/profile_train.py [--steps 12]
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, log, write_result  # noqa: E402

# (label, substring of a frame "function (file:line)") in the order they nest; a sample counts for
# the first label whose frame appears in its stack, scanning from the innermost frame outwards.
PARTS = [
    ("metrics: update_metrics (token accuracy, perplexity, eval loss, ...)", "_update_training_metrics", "ludwig/trainers/"),
    ("loss: train_loss (target realignment + cross-entropy)", "train_loss", "ludwig/models/llm.py"),
    ("output: predictions (softmax probabilities, argmax, fp32 casts)", "predictions", "ludwig/features/"),
    ("inputs: generate_merged_ids (prompt+target merge, padding, masks)", "generate_merged_ids", "ludwig/utils/llm_utils.py"),
    ("model forward (transformers + peft)", "forward", "modeling_llama.py"),
    ("backward", "_backward_pass", "ludwig/trainers/"),
    ("optimizer step", "_optimizer_step", "ludwig/trainers/"),
    ("batcher: next batch", "next_batch", "ludwig/data/"),
    ("step summary / tensorboard", "write_step_summary", "ludwig/trainers/"),
]


def _is(frame: str, func: str, file_part: str = "") -> bool:
    """py-spy frames read "Class.method (path/file.py:line)"."""
    name, _, where = frame.partition(" (")
    return name.rsplit(".", 1)[-1] == func and file_part in where


def parse_raw(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            stacks.append((head.split(";"), int(count)))
    return stacks


def analyse(stacks: list[tuple[list[str], int]]) -> dict:
    in_loop = [(frames, n) for frames, n in stacks if any(_is(f, "_train_loop") for f in frames)]
    total = sum(n for _, n in in_loop)
    parts: collections.Counter = collections.Counter()
    functions: collections.Counter = collections.Counter()
    for frames, n in in_loop:
        label = "other (Ludwig loop bookkeeping, callbacks, progress bar)"
        # outermost match wins for nested parts that are called from each other: scan from the outside in
        for name, func, file_part in PARTS:
            if any(_is(f, func, file_part) for f in frames):
                label = name
                break
        parts[label] += n
        seen = set()
        for f in frames[frames.index(next(f for f in frames if _is(f, "_train_loop"))):]:
            if ("ludwig/" in f or "ftpipe/" in f or "peft/" in f) and f not in seen:
                seen.add(f)
                functions[f] += n
    return {
        "samples_in_train_loop": total,
        "share_by_part": {k: round(v / total, 4) for k, v in parts.most_common()},
        "heaviest_functions_inclusive": [{"frame": f, "share": round(n / total, 4)} for f, n in functions.most_common(25)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--reuse", type=Path, help=argparse.SUPPRESS)  # analyse an existing raw file
    a = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    work = Path(tempfile.mkdtemp(prefix="ftpipe-bench-prof-"))
    raw = work / "ftpipe.raw"
    if a.reuse:
        raw = a.reuse
    cmd = [spy, "record", "--format", "raw", "--rate", "100", "--output", str(raw), "--",
           sys.executable, str(Path(__file__).with_name("train_ab.py")), "--side", "ftpipe", "--steps", str(a.steps),
           "--out", str(work / "trial.json")]
    if not a.reuse:
        log("profile: " + " ".join(cmd))
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trial = json.loads((work / "trial.json").read_text()) if (work / "trial.json").exists() else {}
    result = analyse(parse_raw(raw))
    path = write_result("profile_train", {
        "what": "py-spy samples of one ftpipe training trial, restricted to Ludwig's training loop",
        "settings": {"steps": a.steps, "rate_hz": 100, "sampler": "py-spy record --format raw (Python frames)"},
        "trial": {k: trial.get(k) for k in ("real_tokens_per_s", "s_per_step", "component_s_per_step", "epoch")},
        **result,
    })
    for k, v in result["share_by_part"].items():
        print(f"{v:6.1%}  {k}")
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
