"""`ftpipe sweep SPEC`: search spec fields for the setting that learns the targets without forgetting.

Biderman et al. 2024 ("LoRA Learns Less and Forgets Less") compare fine-tuning settings on a
learning-versus-forgetting frontier; a sweep draws that frontier for one spec. Each trial is an
ordinary `ftpipe run` of the spec with `--set` overrides (its own run folder, lock, manifest and
report, the base model's scores shared through the cache), never promoted by itself. Two
objectives, each with its CI:

* **learning**: the mean over target tasks of the gain tuned - base (stratified bootstrap CI over
  the tasks' items);
* **forgetting**: the worst relative drop of a held-out task (the CI of that task's drop).

Optuna drives the search: a grid over choices, or multi-objective TPE / NSGA-II / random with a
trial budget. The study lives in SQLite in the sweep folder (`runs/<pipeline>/sweeps/<study>/`),
so a killed sweep resumes where it stopped: finished trials are kept, a trial whose worker died is
marked failed and queued again with the same parameters (its run folder resumes like any
interrupted run). Several workers, on one machine or many, run trials of the same sweep when they
share a database URL (`--storage`); Optuna's heartbeat fails trials of workers that vanished.

The sweep report (sweep.json, sweep.md, frontier.png) has every trial as a point with CI whiskers,
the Pareto front, a table and a recommendation: the trial that learns most among those that pass
the spec's gates (or a forgetting tolerance); `--promote-best` promotes it under the pipeline's lock.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpipe import console
from ftpipe.errors import BadInputError, FtpipeError
from ftpipe.files import write_json_atomic, write_text_atomic
from ftpipe.lifecycle.runs import pipeline_dir
from ftpipe.paths import runs_root
from ftpipe.spec import LoadedSpec, SweepParam, SweepSpec, load_spec, parse_override

SWEEPS = "sweeps"
OBJECTIVES = ("learning", "forgetting")  # maximize, minimize
_LOCK_WAIT_S = 7 * 24 * 3600  # a worker waits for another worker's trial of the same pipeline (shared runs root)


@dataclass
class SweepResult:
    """What `ftpipe sweep` returns: the sweep folder, its report, and the promoted run if any."""

    folder: Path
    report: dict
    promoted: Path | None = None


# --------------------------------------------------------------------------------------------
# The search space: from the spec's sweep section and --param
# --------------------------------------------------------------------------------------------


def parse_param(text: str) -> tuple[str, SweepParam]:
    """One `--param`: `key=v1,v2,...` (choices), `key=low:high`, `key=log:low:high` or `key=int:low:high` (ranges).

    Raises:
        BadInputError: not in one of those forms.
    """
    if "=" not in text:
        raise BadInputError(f"--param {text}: expected path.to.key=values",
                            hint="e.g. --param training.learning_rate=1e-4,1e-3 or --param adapter.r=int:4:16")
    key, value = (part.strip() for part in text.split("=", 1))
    head, _, rest = value.partition(":")
    try:
        if head in ("log", "int", "float") and rest.count(":") == 1:
            low, high = (float(x) for x in rest.split(":"))
            return key, SweepParam(low=low, high=high, log=head == "log", type="int" if head == "int" else "float")
        if value.count(":") == 1 and "," not in value:
            low, high = (float(x) for x in value.split(":"))
            return key, SweepParam(low=low, high=high)
        return key, SweepParam(choices=[parse_override(f"x={v.strip()}")[1] for v in value.split(",") if v.strip()])
    except (ValueError, FtpipeError) as e:
        from pydantic import ValidationError

        reason = e.errors()[0]["msg"].removeprefix("Value error, ") if isinstance(e, ValidationError) else str(e).splitlines()[0]
        raise BadInputError(f"--param {text}: {reason}",
                            hint="choices: key=a,b,c; ranges: key=low:high, key=log:low:high, key=int:low:high") from None


def search_space(section: SweepSpec | None, cli: list[str]) -> dict[str, SweepParam]:
    """The spec's sweep params, with `--param` ones added or replacing them; `adapter.type` first."""
    params = dict(section.params) if section else {}
    for text in cli:
        key, param = parse_param(text)
        params[key] = param
    if not params:
        raise BadInputError("nothing to search: the spec has no sweep.params and no --param was given",
                            hint="e.g. --param training.learning_rate=1e-4,1e-3 or a sweep: section")
    return dict(sorted(params.items(), key=lambda kv: (kv[0] != "adapter.type", kv[0])))


def trial_overrides(params: dict[str, Any]) -> list[str]:
    """`--set` overrides of one trial. A new adapter.type replaces the adapter section (its own defaults)."""
    out = []
    for key, value in sorted(params.items(), key=lambda kv: (kv[0] != "adapter.type", kv[0])):
        out.append(f"adapter={json.dumps({'type': value})}" if key == "adapter.type" else f"{key}={json.dumps(value)}")
    return out


def grid_size(space: dict[str, SweepParam]) -> int:
    """Number of combinations of a grid; BadInputError when a parameter is a range."""
    ranged = [k for k, p in space.items() if p.choices is None]
    if ranged:
        raise BadInputError(f"sweep.sampler grid needs choices, but {', '.join(ranged)} is a range",
                            hint="give a list of values, or use --sampler tpe / nsga2 / random with a trial budget")
    n = 1
    for p in space.values():
        n *= len(p.choices)
    return n


def check_space(spec_path: Path, base_overrides: list[str], space: dict[str, SweepParam]) -> None:
    """Load the spec with every grid point (ranges: their ends) so a bad field fails before any training."""
    values = {k: p.choices if p.choices is not None else [_cast(p, p.low), _cast(p, p.high)] for k, p in space.items()}
    for combo in itertools.islice(itertools.product(*values.values()), 64):
        load_spec(spec_path, [*base_overrides, "sweep=null", *trial_overrides(dict(zip(values, combo)))])


def _cast(p: SweepParam, x: float) -> float | int:
    return int(round(x)) if p.type == "int" else x


def _suggest(trial: Any, name: str, p: SweepParam) -> Any:
    if p.choices is not None:
        return trial.suggest_categorical(name, p.choices)
    if p.type == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)


# --------------------------------------------------------------------------------------------
# Objectives, Pareto front, recommendation: pure functions of reports
# --------------------------------------------------------------------------------------------


def trial_objectives(report: dict, item_scores: dict[str, tuple[list[float], list[float]]] | None = None,
                     n_resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Learning and forgetting of one evaluated run, each with its CI.

    Args:
        report: The run's report.json.
        item_scores: Per target task, (base, tuned) per-item scores (from its predictions), for the
            stratified bootstrap of learning; without them (or for perplexity targets) the CI is the
            mean of the tasks' CI bounds, which is wider.

    Returns:
        learning, learning_ci (low, high), forgetting (worst held-out relative drop; 0 without
        held-out tasks), forgetting_ci, the task it comes from, and whether the gates passed.
    """
    from ftpipe.evaluation import stats

    targets = [t for t in report["tasks"] if t["role"] == "target"]
    held = [t for t in report["tasks"] if t["role"] == "held_out"]
    sign = [1.0 if t.get("higher_is_better", t["kind"] != "perplexity") else -1.0 for t in targets]
    learning = sum(s * t["delta"] for s, t in zip(sign, targets)) / len(targets)
    groups = [item_scores.get(t["task"]) for t in targets] if item_scores else []
    if groups and all(g is not None for g in groups) and all(s > 0 for s in sign):
        _, low, high = stats.stratified_bootstrap_mean_delta_ci(groups, confidence=report.get("confidence", 0.95),
                                                                 n_resamples=n_resamples, seed=seed)
    else:
        bounds = [(t["ci_low"], t["ci_high"]) if s > 0 else (-t["ci_high"], -t["ci_low"]) for s, t in zip(sign, targets)]
        low, high = sum(b[0] for b in bounds) / len(bounds), sum(b[1] for b in bounds) / len(bounds)
    worst, forgetting, f_ci = None, 0.0, (0.0, 0.0)
    for t in held:
        if t.get("forgetting") is None or not t["base"]:
            continue
        if worst is None or t["forgetting"] > forgetting:
            base = abs(t["base"])
            higher = t.get("higher_is_better", t["kind"] != "perplexity")
            worst, forgetting = t["task"], t["forgetting"]
            f_ci = (-t["ci_high"] / base + 0.0, -t["ci_low"] / base + 0.0) if higher else (t["ci_low"] / base, t["ci_high"] / base)
    gates = report.get("gates") or {}
    return {"learning": learning, "learning_ci": [low, high], "forgetting": forgetting, "forgetting_ci": list(f_ci),
            "forgetting_task": worst, "gates_configured": bool(gates.get("configured")),
            "gates_passed": bool(gates.get("passed")) if gates.get("configured") else None,
            "learned": [t["task"] for t in targets if t["verdict"] == "learned"],
            "forgot": [t["task"] for t in held if t["verdict"] == "forgot"]}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, learning maximized and forgetting minimized.

    A point dominates another when it learns at least as much and forgets at most as much, and is
    strictly better in one of the two. Equal points are all on the front. Sorted by forgetting.
    """
    front = []
    for i, (li, fi) in enumerate(points):
        dominated = any(lj >= li and fj <= fi and (lj > li or fj < fi) for j, (lj, fj) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][1], -points[i][0]))


def recommend(trials: list[dict], max_forgetting: float | None = None) -> tuple[int | None, str]:
    """The trial that learns most among those that pass: the forgetting tolerance when given, else the gates.

    Args:
        trials: Finished trials, each with learning, forgetting and gates_passed (None: no gates).
        max_forgetting: Tolerance on the worst relative held-out drop (point value).

    Returns:
        (index into `trials` or None, why), in plain words.
    """
    if not trials:
        return None, "no trial finished"
    if max_forgetting is not None:
        eligible = [i for i, t in enumerate(trials) if t["forgetting"] <= max_forgetting]
        rule = f"forgetting at most {max_forgetting:.1%}"
    elif any(t["gates_passed"] is not None for t in trials):
        eligible = [i for i, t in enumerate(trials) if t["gates_passed"]]
        rule = "every gate of the spec passed"
    else:
        eligible, rule = list(range(len(trials))), "no gates and no tolerance given: learning alone"
    if not eligible:
        return None, f"no trial meets the rule ({rule})"
    best = max(eligible, key=lambda i: (trials[i]["learning"], -trials[i]["forgetting"]))
    return best, f"learns most among the {len(eligible)} of {len(trials)} trials with {rule}"


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


def sweep_folder(spec_name: str, study: str, root: Path | None = None) -> Path:
    """`<runs root>/<pipeline>/sweeps/<study>/`: the default SQLite database and the sweep report."""
    return pipeline_dir(spec_name, root) / SWEEPS / study


STORAGE_ATTEMPTS = 5


def optuna_storage(url: str, heartbeat_s: int):
    """Optuna storage at `url` with a heartbeat, so trials of a dead worker are found and queued again."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from sqlalchemy.exc import IntegrityError, OperationalError

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are experimental
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
        except (OperationalError, IntegrityError) as e:
            # Workers started together on a new database race to create its tables; the loser fails with
            # "table ... already exists" (optuna/optuna#4621). Once the winner is done, the schema is there.
            lost_the_race = "already exists" in str(e) or "UNIQUE constraint" in str(e)
            if not lost_the_race or attempt == STORAGE_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def _sampler(kind: str, space: dict[str, SweepParam], seed: int):
    import optuna

    if kind == "grid":
        return optuna.samplers.GridSampler({k: p.choices for k, p in space.items()}, seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, 10))
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=4)
    return optuna.samplers.RandomSampler(seed=seed)


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return start is None or stat.rsplit(")", 1)[1].split()[19] == start


def _process_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def recover_dead_trials(study: Any) -> list[int]:
    """Queue again, with the same parameters, every trial that ended without a result or an error.

    A killed sweep's trial stays RUNNING in the database; on this host its worker is known dead at
    once from its recorded pid (on other hosts Optuna's heartbeat fails it after its grace period),
    and it is marked failed. A trial interrupted with Ctrl-C is failed without an error. Each such
    trial is queued again once (at most 3 times in a row); its run folder, an interrupted run of
    the same spec, then resumes. Trials that failed with an error (a bad value, say) are not retried.

    Returns:
        The numbers of the trials queued again.
    """
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") != platform.node() or "pid" not in attrs:
            continue
        if _pid_alive(int(attrs["pid"]), attrs.get("process_start")):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another worker failed it first
            continue
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    recovered = []
    for trial in trials:
        if trial.state != TrialState.FAIL or "error" in trial.user_attrs or trial.number in retried:
            continue
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > 3:
            continue
        import optuna

        system = {k: v for k, v in trial.system_attrs.items() if k not in ("failed_trial", "retry_history")}
        system.update({"failed_trial": history[0], "retry_history": history})
        study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=trial.params,
                                            distributions=trial.distributions, system_attrs=system))
        recovered.append(trial.number)
    if recovered:
        console.log(f"sweep: trial(s) {', '.join(map(str, recovered))} ended without a result; "
                    "queued again with the same parameters")
    return recovered


def _counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return {"complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "errored": sum(t.state == TrialState.FAIL and "error" in t.user_attrs for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials)}


def _grid_done(study: Any, space: dict[str, SweepParam]) -> bool:
    from optuna.trial import TrialState

    done = {tuple(json.dumps(t.params.get(k)) for k in space) for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)}
    return len(done) >= grid_size(space)


def _item_scores(run_dir: Path, report: dict) -> dict[str, tuple[list[float], list[float]]]:
    out = {}
    for t in report["tasks"]:
        path = run_dir / "predictions" / f"{t['task']}.jsonl"
        if t["role"] == "target" and path.exists():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            out[t["task"]] = ([r["base_score"] for r in rows], [r["tuned_score"] for r in rows])
    return out


def run_sweep(spec_path: Path, params: list[str] | None = None, overrides: list[str] | None = None,
              root: Path | None = None, sampler: str | None = None, trials: int | None = None,
              storage: str | None = None, study_name: str | None = None, max_forgetting: float | None = None,
              promote_best: bool = False, heartbeat_s: int = 60) -> SweepResult:
    """Run (or resume, or join) a sweep of a spec and write its report.

    Args:
        spec_path: The spec; its `sweep:` section gives defaults for everything below.
        params: `--param` search dimensions (added to, or replacing, the section's params).
        overrides: `--set` overrides applied to every trial.
        root: Root of run folders (trials are runs of the spec's pipeline there).
        sampler: grid, tpe, nsga2 or random.
        trials: Trial budget of the whole sweep (all workers together); grid: its size.
        storage: Optuna storage URL; default SQLite in the sweep folder. Workers sharing it share the sweep.
        study_name: The study (default: the sweep section's, else the pipeline's name).
        max_forgetting: Forgetting tolerance of the recommendation (default: the spec's gates).
        promote_best: Promote the recommended trial's run (it must be on this machine).
        heartbeat_s: Seconds between a running trial's heartbeats; a trial silent for twice this
            is failed and queued again by any worker.

    Raises:
        BadInputError: an unknown field or value in the search space, a range in a grid.
    """
    import optuna

    base_overrides = list(overrides or [])
    loaded = load_spec(spec_path, base_overrides)
    section = loaded.spec.sweep or SweepSpec()
    space = search_space(loaded.spec.sweep, params or [])
    kind = sampler or section.sampler
    budget = trials or section.trials or (grid_size(space) if kind == "grid" else 8)
    if kind == "grid":
        grid_size(space)
    check_space(spec_path, base_overrides, space)
    name = study_name or section.study or loaded.spec.name
    root = root or runs_root()
    folder = sweep_folder(loaded.spec.name, name, root)
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or section.storage or f"sqlite:///{(folder / 'optuna.db').resolve()}"
    study = optuna.create_study(study_name=name, storage=optuna_storage(url, heartbeat_s), load_if_exists=True,
                                directions=["maximize", "minimize"], sampler=_sampler(kind, space, section.seed))
    study.set_metric_names(list(OBJECTIVES))
    study.set_user_attr("spec", str(Path(spec_path)))
    study.set_user_attr("space", {k: p.model_dump(exclude_none=True) for k, p in space.items()})
    console.log(f"sweep {name}: {kind} over {', '.join(space)}; budget {budget} trials; storage {url}")

    def objective(trial: Any) -> tuple[float, float]:
        values = {k: _suggest(trial, k, p) for k, p in space.items()}
        trial_set = [*base_overrides, "sweep=null", *trial_overrides(values)]
        for key, value in {"host": platform.node(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
                           "overrides": trial_set}.items():
            trial.set_user_attr(key, value)
        console.log(f"sweep trial {trial.number}: {', '.join(f'{k}={v}' for k, v in values.items())}")
        from ftpipe.lifecycle.pipeline import run_pipeline

        try:
            result = run_pipeline(Path(spec_path), trial_set, root, promote=False, lock_wait_s=_LOCK_WAIT_S)
        except Exception as e:  # recorded, and the sweep moves on; Ctrl-C and kills are retried instead
            trial.set_user_attr("error", e.one_line() if isinstance(e, FtpipeError) else f"{type(e).__name__}: {e}")
            raise
        trial.set_user_attr("run_dir", str(result.run_dir.resolve()))
        trial.set_user_attr("run_id", result.run_dir.name)
        spec = load_spec(spec_path, trial_set).spec
        obj = trial_objectives(result.report, _item_scores(result.run_dir, result.report),
                               n_resamples=spec.evaluation.bootstrap_resamples, seed=spec.training.seed)
        for key, value in obj.items():
            trial.set_user_attr(key, value)
        console.log(f"sweep trial {trial.number}: learning {obj['learning']:+.3f} [{obj['learning_ci'][0]:+.3f}, "
                    f"{obj['learning_ci'][1]:+.3f}], forgetting {obj['forgetting']:+.1%}")
        return obj["learning"], obj["forgetting"]

    while True:
        recover_dead_trials(study)
        c = _counts(study)
        if c["waiting"] == 0 and (c["complete"] + c["errored"] + c["running"] >= budget
                                  or (kind == "grid" and _grid_done(study, space))):
            break
        study.optimize(objective, n_trials=1, catch=(Exception,))
    report = sweep_report(study, loaded, max_forgetting if max_forgetting is not None else section.max_forgetting)
    report.update({"study": name, "storage": url if storage or section.storage else str(folder / "optuna.db"),
                   "sampler": kind, "budget": budget})
    write_sweep_report(folder, report)
    promoted = _promote(report, name) if promote_best else None
    return SweepResult(folder=folder, report=report, promoted=promoted)


def trial_rows(study: Any) -> list[dict]:
    """Every trial of a study as a report row (objectives and CIs for complete ones)."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row = {"number": t.number, "state": t.state.name.lower(), "params": t.params, "run_dir": a.get("run_dir"),
               "run_id": a.get("run_id"), "host": a.get("host"), "error": a.get("error"),
               "retry_of": t.system_attrs.get("failed_trial")}
        if t.state == TrialState.COMPLETE:
            row.update({k: a.get(k) for k in ("learning", "learning_ci", "forgetting", "forgetting_ci", "forgetting_task",
                                               "gates_passed", "learned", "forgot")})
        rows.append(row)
    return rows


def sweep_report(study: Any, loaded: LoadedSpec, max_forgetting: float | None) -> dict:
    """The sweep's trials, Pareto front and recommendation, from the study's database alone."""
    rows = trial_rows(study)
    done = [r for r in rows if r["state"] == "complete"]
    front = pareto_front([(r["learning"], r["forgetting"]) for r in done])
    for k, r in enumerate(done):
        r["pareto"] = k in front
    tolerance = max_forgetting
    best, why = recommend(done, tolerance)
    return {"pipeline": loaded.spec.name, "objectives": {"learning": "maximize: mean target gain (tuned - base)",
                                                         "forgetting": "minimize: worst held-out relative drop"},
            "trials": rows, "pareto": [done[i]["number"] for i in front],
            "recommended": done[best]["number"] if best is not None else None, "recommendation": why,
            "max_forgetting": tolerance, "confidence": loaded.spec.evaluation.confidence}


def write_sweep_report(folder: Path, report: dict) -> None:
    """sweep.json, sweep.md and frontier.png in the sweep folder."""
    write_json_atomic(folder / "sweep.json", report)
    render_frontier(report, folder / "frontier.png")
    write_text_atomic(folder / "sweep.md", sweep_markdown(report))


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def sweep_markdown(report: dict) -> str:
    """The sweep report for people."""
    pct = int(report["confidence"] * 100)
    out = [f"# ftpipe sweep: {report['pipeline']} / {report.get('study', '')}", "",
           f"Sampler `{report.get('sampler')}`, {len(report['trials'])} trials in the study "
           f"({sum(t['state'] == 'complete' for t in report['trials'])} complete). Learning: mean gain on the target tasks "
           f"(tuned - base); forgetting: the worst relative drop of a held-out task (positive = forgot); [{pct}% CI].", ""]
    rec = next((t for t in report["trials"] if t["number"] == report["recommended"]), None)
    if rec:
        out.append(f"**Recommended: trial {rec['number']}** ({_fmt_params(rec['params'])}): learning {rec['learning']:+.3f} "
                   f"[{rec['learning_ci'][0]:+.3f}, {rec['learning_ci'][1]:+.3f}], forgetting {rec['forgetting']:+.1%} "
                   f"[{rec['forgetting_ci'][0]:+.1%}, {rec['forgetting_ci'][1]:+.1%}] ({rec['forgetting_task'] or 'no drop'}); "
                   f"{report['recommendation']}. Run `{rec['run_dir']}`.")
    else:
        out.append(f"**No recommendation:** {report['recommendation']}.")
    out += ["", "![learning versus forgetting](frontier.png)", "",
            "| trial | params | learning [CI] | forgetting [CI] | worst probe | gates | Pareto | state | run |",
            "|---|---|---|---|---|---|---|---|---|"]
    for t in report["trials"]:
        if t["state"] == "complete":
            gates = "n/a" if t["gates_passed"] is None else ("pass" if t["gates_passed"] else "FAIL")
            out.append(f"| {t['number']}{' *' if t['number'] == report['recommended'] else ''} | {_fmt_params(t['params'])} | "
                       f"{t['learning']:+.3f} [{t['learning_ci'][0]:+.3f}, {t['learning_ci'][1]:+.3f}] | "
                       f"{t['forgetting']:+.1%} [{t['forgetting_ci'][0]:+.1%}, {t['forgetting_ci'][1]:+.1%}] | "
                       f"{t['forgetting_task'] or ''} | {gates} | {'yes' if t['pareto'] else ''} | complete | {t['run_id']} |")
        else:
            note = t["error"] or (f"retried as a new trial" if t["state"] == "fail" else "")
            out.append(f"| {t['number']} | {_fmt_params(t['params'])} | | | | | | {t['state']} {note} | {t['run_id'] or ''} |")
    return "\n".join(out) + "\n"


def render_frontier(report: dict, path: Path) -> Path:
    """Every complete trial as a point with CI whiskers on both axes; the Pareto front as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in report["trials"] if t["state"] == "complete"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for t in sorted(done, key=lambda t: t["number"] == report["recommended"]):  # the recommendation drawn last
        x, y = t["forgetting"], t["learning"]
        xerr = [[max(0.0, x - t["forgetting_ci"][0])], [max(0.0, t["forgetting_ci"][1] - x)]]
        yerr = [[max(0.0, y - t["learning_ci"][0])], [max(0.0, t["learning_ci"][1] - y)]]
        color = "tab:red" if t["number"] == report["recommended"] else ("tab:blue" if t["pareto"] else "tab:gray")
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=color, ecolor=color, alpha=0.8, capsize=3)
        ax.annotate(str(t["number"]), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = [t for t in done if t["pareto"]]
    front.sort(key=lambda t: t["forgetting"])
    if front:
        ax.step([t["forgetting"] for t in front], [t["learning"] for t in front], where="post", color="tab:blue",
                linewidth=1.2, label="Pareto front")
    if report.get("max_forgetting") is not None:
        ax.axvline(report["max_forgetting"], color="tab:orange", linestyle="--", linewidth=1, label="forgetting tolerance")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("forgetting: worst held-out relative drop (lower is better)")
    ax.set_ylabel("learning: mean target gain (higher is better)")
    ax.set_title("Learning versus forgetting (red: recommended)")
    if front or report.get("max_forgetting") is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def _promote(report: dict, study: str) -> Path | None:
    from ftpipe.lifecycle.promotion import locked, promote_locked

    rec = next((t for t in report["trials"] if t["number"] == report["recommended"]), None)
    if rec is None:
        console.log(f"--promote-best: nothing promoted ({report['recommendation']})")
        return None
    run_dir = Path(rec["run_dir"])
    if not run_dir.is_dir():
        raise BadInputError(f"--promote-best: trial {rec['number']}'s run {run_dir} is not on this machine",
                            hint=f"run `ftpipe promote {rec['run_id']}` on {rec['host']}")
    with locked(run_dir.parent, f"promote the best trial of sweep {study}"):
        promote_locked(run_dir, f"best trial {rec['number']} of sweep {study}: {report['recommendation']}")
    console.log(f"promoted {run_dir.name} (trial {rec['number']})")
    return run_dir
