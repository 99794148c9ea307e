"""Issue 14: `ftpipe sweep` (Optuna over spec fields, learning versus forgetting, resumable and shared).

Pure parts (search space, objectives, Pareto front, recommendation) on constructed numbers; the
study machinery on a real SQLite database; whole sweeps on the tiny model (slow: several runs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftpipe.errors import BadInputError
from ftpipe.lifecycle.sweep import (
    grid_size,
    parse_param,
    pareto_front,
    recommend,
    recover_dead_trials,
    search_space,
    trial_objectives,
    trial_overrides,
)
from ftpipe.spec import SweepSpec

TINY = Path(__file__).parent / "fixtures" / "specs" / "tiny_lora.yaml"
REPO = Path(__file__).resolve().parents[1]


def test_pareto_front_keeps_exactly_the_undominated_trials():
    # (learning, forgetting): 0 and 3 trade off, 1 is dominated by 0, 2 by 3, 4 equals 0, 5 learns most forgetting most
    points = [(0.5, 0.1), (0.4, 0.2), (0.2, 0.05), (0.3, 0.0), (0.5, 0.1), (0.8, 0.6)]
    assert pareto_front(points) == [3, 0, 4, 5]
    assert pareto_front([]) == [] and pareto_front([(0.1, 0.1)]) == [0]
    assert pareto_front([(0.0, 0.0), (0.0, 0.1), (-0.1, 0.0)]) == [0]


def test_recommendation_learns_most_among_those_that_pass():
    trials = [{"learning": 0.8, "forgetting": 0.6, "gates_passed": False},
              {"learning": 0.5, "forgetting": 0.08, "gates_passed": True},
              {"learning": 0.3, "forgetting": 0.0, "gates_passed": True}]
    assert recommend(trials) == (1, "learns most among the 2 of 3 trials with every gate of the spec passed")
    best, why = recommend(trials, max_forgetting=0.05)
    assert best == 2 and "forgetting at most 5.0%" in why
    assert recommend(trials, max_forgetting=0.7)[0] == 0
    assert recommend([{**t, "gates_passed": False} for t in trials])[0] is None
    assert recommend([{**t, "gates_passed": None} for t in trials])[0] == 0  # no gates, no tolerance: learning alone
    assert recommend([]) == (None, "no trial finished")


def test_params_from_the_command_line_and_the_spec_section():
    assert parse_param("training.learning_rate=1e-4,1e-3")[1].choices == [1e-4, 1e-3]
    assert parse_param("adapter.type=lora,ia3")[1].choices == ["lora", "ia3"]
    r = parse_param("adapter.r=int:4:16")[1]
    assert (r.low, r.high, r.type, r.log) == (4, 16, "int", False)
    assert parse_param("training.learning_rate=log:1e-5:1e-3")[1].log
    assert parse_param("data.replay.share=0.1:0.4")[1].high == 0.4
    with pytest.raises(BadInputError, match="expected path.to.key=values"):
        parse_param("training.learning_rate")
    with pytest.raises(BadInputError, match="log range needs low > 0"):
        parse_param("training.learning_rate=log:0:1")
    section = SweepSpec.model_validate({"params": {"training.epochs": [1, 2], "adapter.type": ["lora", "ia3"]}})
    space = search_space(section, ["training.epochs=3,4"])
    assert list(space) == ["adapter.type", "training.epochs"] and space["training.epochs"].choices == [3, 4]
    assert grid_size(space) == 4
    with pytest.raises(BadInputError, match="grid needs choices"):
        grid_size(search_space(None, ["adapter.r=int:4:16"]))
    with pytest.raises(BadInputError, match="nothing to search"):
        search_space(None, [])
    assert trial_overrides({"training.learning_rate": 0.001, "adapter.type": "ia3"}) == \
        ['adapter={"type": "ia3"}', "training.learning_rate=0.001"]


def test_a_bad_field_in_the_space_fails_before_training(tmp_path):
    from ftpipe.errors import SpecError
    from ftpipe.lifecycle.sweep import run_sweep

    with pytest.raises(SpecError, match="training.learnin_rate"):
        run_sweep(TINY, ["training.learnin_rate=0.1,0.2"], root=tmp_path)
    with pytest.raises(SpecError, match="adapter.r"):  # ia3 has no rank: the combination is refused up front
        run_sweep(TINY, ["adapter.type=lora,ia3", "adapter.r=4,8"], root=tmp_path)


def report(targets: list[tuple[float, float, float]], held: list[tuple[float, float, float, float]], gates=None) -> dict:
    """A report with target tasks (delta, low, high) and held-out tasks (base, delta, low, high)."""
    tasks = [{"task": f"t{i}", "role": "target", "kind": "exact_match", "delta": d, "ci_low": lo, "ci_high": hi,
              "verdict": "learned" if lo > 0 else "no significant change"} for i, (d, lo, hi) in enumerate(targets)]
    tasks += [{"task": f"h{i}", "role": "held_out", "kind": "contains", "base": b, "delta": d, "ci_low": lo, "ci_high": hi,
               "forgetting": -d / b, "verdict": "forgot" if hi < 0 else "no significant change"}
              for i, (b, d, lo, hi) in enumerate(held)]
    return {"tasks": tasks, "confidence": 0.95, "gates": gates or {"configured": False}}


def test_objectives_of_a_report_with_their_cis():
    r = report([(0.5, 0.4, 0.6), (0.3, 0.1, 0.5)], [(0.5, -0.25, -0.35, -0.15), (0.8, -0.08, -0.16, 0.0)],
               gates={"configured": True, "passed": False})
    obj = trial_objectives(r)
    assert obj["learning"] == pytest.approx(0.4) and obj["learning_ci"] == pytest.approx([0.25, 0.55])
    assert obj["forgetting"] == pytest.approx(0.5) and obj["forgetting_task"] == "h0"
    assert obj["forgetting_ci"] == pytest.approx([0.3, 0.7])  # -(ci)/base of the worst probe
    assert obj["gates_passed"] is False and obj["learned"] == ["t0", "t1"] and obj["forgot"] == ["h0"]
    # with the items: a stratified bootstrap of the mean gain, narrower than averaging the bounds
    items = {"t0": ([0.0] * 40, [1.0] * 20 + [0.0] * 20), "t1": ([0.0] * 40, [1.0] * 12 + [0.0] * 28)}
    obj = trial_objectives(report([(0.5, 0.35, 0.65), (0.3, 0.15, 0.45)], []), items, n_resamples=2000)
    assert obj["learning"] == pytest.approx(0.4) and obj["learning_ci"][0] < 0.4 < obj["learning_ci"][1]
    assert obj["learning_ci"][1] - obj["learning_ci"][0] < 0.3 and obj["forgetting"] == 0.0


def test_a_trial_whose_worker_died_is_queued_again_with_its_parameters(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from ftpipe.lifecycle.sweep import optuna_storage

    study = optuna.create_study(study_name="s", storage=optuna_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", 60),
                                directions=["maximize", "minimize"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = study.ask({"training.learning_rate": optuna.distributions.CategoricalDistribution([0.1, 0.2])})
    alive.set_user_attr("host", os.uname().nodename)
    alive.set_user_attr("pid", os.getpid())
    gone = study.ask({"training.learning_rate": optuna.distributions.CategoricalDistribution([0.1, 0.2])})
    for key, value in {"host": os.uname().nodename, "pid": dead.pid, "process_start": "0"}.items():
        gone.set_user_attr(key, value)
    other_host = study.ask()
    other_host.set_user_attr("host", "elsewhere")
    other_host.set_user_attr("pid", dead.pid)
    assert recover_dead_trials(study) == [gone.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[gone.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    assert states[other_host.number] == TrialState.RUNNING  # another machine's: Optuna's heartbeat decides
    retry = study.get_trials(states=(TrialState.WAITING,))
    assert len(retry) == 1 and retry[0].params == gone.params and retry[0].system_attrs["failed_trial"] == gone.number
    assert recover_dead_trials(study) == []
    # the retry, interrupted by Ctrl-C (failed, no error), is queued again; a trial that failed with an error is not
    interrupted = study.ask({"training.learning_rate": optuna.distributions.CategoricalDistribution([0.1, 0.2])})
    assert interrupted.number == retry[0].number and interrupted.params == gone.params  # ask() takes the queued trial
    study.tell(interrupted, state=TrialState.FAIL)
    errored = study.ask({"training.learning_rate": optuna.distributions.CategoricalDistribution([0.1, 0.2])})
    errored.set_user_attr("error", "spec.yaml:3:1 training.learning_rate: must be > 0")
    study.tell(errored, state=TrialState.FAIL)
    assert recover_dead_trials(study) == [interrupted.number]
    again = study.get_trials(states=(TrialState.WAITING,))
    assert len(again) == 1 and again[0].system_attrs["retry_history"] == [gone.number, interrupted.number]
    assert again[0].params == gone.params and recover_dead_trials(study) == []


# --------------------------------------------------------------------------------------------- tiny-model sweeps

SWEEP_ARGS = ["--param", "training.learning_rate=0.001,0.003", "--set", "training.max_steps=2",
              "--set", "evaluation.max_items=6", "--max-forgetting", "0.1"]


def _worker(runs: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "ftpipe", "sweep", str(TINY), *SWEEP_ARGS, "--runs-dir", str(runs), *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _trials(db: Path) -> list[tuple[int, str]]:
    import sqlite3

    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return con.execute("select number, state from trials order by number").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


@pytest.mark.slow
def test_a_killed_sweep_resumes(tiny_llama_dir, tmp_path):
    """Kill a grid sweep during its second trial; the resumed sweep keeps the finished trial, queues the killed one
    again with the same parameters, resumes its interrupted run folder, and reports both."""
    from ftpipe.lifecycle import list_runs
    from ftpipe.lifecycle.sweep import run_sweep

    runs = tmp_path / "runs"
    db = runs / "tiny-lora" / "sweeps" / "tiny-lora" / "optuna.db"
    worker = _worker(runs)
    deadline = time.time() + 400
    while time.time() < deadline:
        states = _trials(db)
        if [s for _, s in states].count("COMPLETE") == 1 and len(states) == 2 and len(list_runs(runs, "tiny-lora")) == 2:
            break
        assert worker.poll() is None, worker.stdout.read()
        time.sleep(1)
    else:
        pytest.fail("the first trial did not finish in time")
    time.sleep(3)  # into the second trial's run
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert [s for _, s in _trials(db)] == ["COMPLETE", "RUNNING"]

    result = run_sweep(TINY, SWEEP_ARGS[1:2], [SWEEP_ARGS[3], SWEEP_ARGS[5]], runs, max_forgetting=0.1)
    trials = result.report["trials"]
    assert [t["state"] for t in trials] == ["complete", "fail", "complete"]
    assert trials[2]["retry_of"] == 1 and trials[2]["params"] == trials[1]["params"] != trials[0]["params"]
    run_ids = {t["run_id"] for t in trials if t["state"] == "complete"}
    assert len(run_ids) == 2 and len(list_runs(runs, "tiny-lora")) in (2, 3)  # resumed in place, or restarted
    assert all(m.status == "succeeded" for d, m in list_runs(runs, "tiny-lora") if d.name in run_ids)
    assert (result.folder / "frontier.png").stat().st_size > 0 and "Pareto" in (result.folder / "sweep.md").read_text()
    assert result.report["recommended"] in (0, 2) and set(result.report["pareto"]) <= {0, 2}
    # each trial is an ordinary run that was not promoted
    assert not (runs / "tiny-lora" / "promoted").exists()


@pytest.mark.slow
def test_two_workers_share_one_sweep(tiny_llama_dir, tmp_path):
    """Two worker processes on one database (Optuna's distributed mode) split the grid between them."""
    runs = tmp_path / "runs"
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [_worker(runs, "--storage", url, "--study", "shared"), _worker(runs, "--storage", url, "--study", "shared")]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    report = json.loads((runs / "tiny-lora" / "sweeps" / "shared" / "sweep.json").read_text())
    done = [t for t in report["trials"] if t["state"] == "complete"]
    assert sorted(t["params"]["training.learning_rate"] for t in done)[:2] in ([0.001, 0.003], [0.001, 0.001], [0.003, 0.003])
    assert {t["params"]["training.learning_rate"] for t in done} == {0.001, 0.003}
    assert len({t["run_id"] for t in done}) == len(done)


def test_validate_and_help_of_the_new_commands_import_no_optuna_or_torch():
    code = ("import sys; from typer.testing import CliRunner; from ftpipe.cli import app; "
            "r = CliRunner().invoke(app, ['validate', 'pipelines/demo_sweep.yaml']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(app, ['sweep', '--help']); assert r.exit_code == 0 and '--promote-best' in r.output; "
            "r = CliRunner().invoke(app, ['evaluate', '--help']); assert r.exit_code == 0 and '--model' in r.output; "
            "heavy = [m for m in ('optuna', 'torch', 'ludwig', 'transformers', 'peft') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


_OPEN_AT = """
import sys, time
from ftpipe.lifecycle.sweep import optuna_storage
start = float(sys.argv[2])
while time.time() < start:
    pass
optuna_storage(sys.argv[1], 60)
"""


def test_workers_that_start_together_on_a_new_database_all_open_it(tmp_path):
    """Two workers started at once raced to create the tables; the loser died with 'table studies already exists'."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    start = time.time() + 4  # after every process has imported optuna
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, url, str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
