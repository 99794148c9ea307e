"""bench/README.md shows the table `bench/run_all.py` builds from bench/results/, never a hand-edited copy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_readme_table_is_built_from_the_kept_results():
    run_all = load_run_all()
    doc = (BENCH / "README.md").read_text()
    start, end = doc.index(run_all.TABLE_START) + len(run_all.TABLE_START), doc.index(run_all.TABLE_END)
    assert doc[start:end].strip("\n") == run_all.table().strip("\n"), \
        "bench/README.md's table differs from bench/results/: rewrite it with `.venv/bin/python bench/run_all.py --table`"


def test_the_table_replaces_only_what_lies_between_the_markers(tmp_path):
    run_all = load_run_all()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{run_all.TABLE_START}\n| old | table |\n{run_all.TABLE_END}\n\nanalysis by hand\n")
    run_all.write_into_readme("| measure | value |\n|---|---|\n| a | 1 |\n", readme)
    assert readme.read_text() == (f"intro\n\n{run_all.TABLE_START}\n| measure | value |\n|---|---|\n| a | 1 |\n"
                                  f"{run_all.TABLE_END}\n\nanalysis by hand\n")
    assert not list(tmp_path.glob("*.tmp"))
    readme.write_text("no markers\n")
    run_all.write_into_readme("| a |\n", readme)
    assert readme.read_text() == "no markers\n"  # left alone, with a log line saying why
