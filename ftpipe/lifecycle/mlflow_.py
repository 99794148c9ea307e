"""MLflow (issue 17): each run logged as an MLflow run, each promotion a Model Registry version and alias.

On when the spec has a `tracking.mlflow` section or `$MLFLOW_TRACKING_URI` is set; needs the optional
extra (`pip install 'ftpipe[mlflow]'`). Everything here is best effort: the run folder and the SQLite
history stay the source of truth, and whatever goes wrong with MLflow (the extra missing, a server
that does not answer, a store that refuses a write) is one warning line, never a failed run or a
refused promotion. Only the MLflow client API is used, with explicit URIs, so no global MLflow state
(`mlflow.set_tracking_uri`, an active run) leaks into the process.

What a run logs: the resolved spec as params (dotted keys), the per-step training loss and learning
rate (`ftpipe.training.read_losses`), every task's base/tuned/delta/CI bounds as metrics, the gates'
results, and the report, charts, compiled and resolved Ludwig configs and the spec as artifacts.
A promotion logs the model under the run's `model/` artifacts (the adapter and an
`ftpipe_model.json` naming its base model, or merged weights), registers it as a version of the
registered model (once per run), and points the alias (`champion`) at it; a rollback points the
alias at the version of the run it rolls back to. The link between an ftpipe run and its MLflow run
and version is `mlflow.json` in the run folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlparse

from ftpipe import console
from ftpipe.files import write_json_atomic
from ftpipe.spec import MlflowSpec, PipelineSpec

RECORD = "mlflow.json"  # in a run folder: its MLflow run, registered model and version
PENDING = ".mlflow_pending"  # in a pipeline folder: an alias move that did not reach MLflow
ARTIFACTS = ("report.md", "report.json", "metrics.json", "spec.yaml", "ludwig_config.yaml", "ludwig_config.resolved.yaml",
             "data_summary.json")
_PARAM_VALUE_MAX = 6000  # MLflow 3's limit on a param's value
_BAD_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
T = TypeVar("T")


def settings_for(spec: PipelineSpec) -> MlflowSpec | None:
    """The MLflow settings of a spec: its `tracking.mlflow` section, defaults when only $MLFLOW_TRACKING_URI is set, or None (off)."""
    if spec.tracking.mlflow is not None:
        return spec.tracking.mlflow
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return MlflowSpec()
    return None


def tracking_uri(settings: MlflowSpec) -> str | None:
    """The spec's tracking URI, else $MLFLOW_TRACKING_URI, else None (MLflow's default)."""
    return settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


# --------------------------------------------------------------------------------------------
# Logging a run
# --------------------------------------------------------------------------------------------


def log_run(run_dir: Path, spec: PipelineSpec, status: str) -> dict | None:
    """Log (or update) the run's MLflow run; returns the `mlflow.json` record, or None with a warning.

    Args:
        run_dir: The run folder.
        spec: The run's resolved spec.
        status: The run's final status (succeeded, trained or failed).
    """
    settings = settings_for(spec)
    if settings is None:
        return None

    def body(client) -> dict:
        record = _log_run(client, run_dir, spec, settings, status)
        console.log(f"mlflow: logged run {run_dir.name} as {record['run_id']} in experiment {record['experiment']} "
                    f"({record['tracking_uri'] or 'default store'})")
        return record

    return _best_effort("run not logged to MLflow", settings, body)[1]


def _log_run(client, run_dir: Path, spec: PipelineSpec, settings: MlflowSpec, status: str) -> dict:
    from mlflow.entities import Metric, Param, RunTag

    from ftpipe.training import read_losses

    uri = tracking_uri(settings)
    record = _record(run_dir, uri)
    experiment = settings.experiment or spec.name
    if record is None:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(
            experiment, artifact_location=settings.artifact_location)
        run_id = client.create_run(experiment_id, run_name=run_dir.name, tags={
            "ftpipe.run_id": run_dir.name, "ftpipe.pipeline": spec.name}).info.run_id
        record = {"tracking_uri": uri, "experiment": experiment, "experiment_id": experiment_id, "run_id": run_id}
        write_json_atomic(run_dir / RECORD, record)
        params = [Param(k, v) for k, v in _flatten(spec.model_dump(mode="json", exclude={"tracking"})).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(record["run_id"], params=params[i:i + 100])
    run_id, now = record["run_id"], int(time.time() * 1000)
    manifest = _json(run_dir / "manifest.json")
    report = _json(run_dir / "report.json")
    metrics = []
    for row in read_losses(run_dir):
        for key, name in (("loss", "train_loss"), ("learning_rate", "learning_rate")):
            if isinstance(row.get(key), (int, float)) and isinstance(row.get("step"), int):
                metrics.append(Metric(name, float(row[key]), now, row["step"]))
    for task in report.get("tasks", []):
        for key in ("base", "tuned", "delta", "ci_low", "ci_high", "few_shot", "forgetting"):
            if isinstance(task.get(key), (int, float)):
                metrics.append(Metric(_metric_name(f"{task['task']}/{key}"), float(task[key]), now, 0))
    gates = report.get("gates") or {}
    if gates.get("configured"):
        metrics.append(Metric("gates/passed", float(bool(gates.get("passed"))), now, 0))
        for result in gates.get("results", []):
            metrics.append(Metric(_metric_name(f"gate/{result['gate']}"), float(bool(result["passed"])), now, 0))
    tags = [RunTag("ftpipe.status", status), RunTag("ftpipe.spec_hash", manifest.get("spec_hash") or ""),
            RunTag("ftpipe.data_fingerprint", manifest.get("data_fingerprint") or ""),
            RunTag("ftpipe.run_dir", str(run_dir.resolve()))]
    if manifest.get("error"):
        tags.append(RunTag("ftpipe.error", str(manifest["error"])[:5000]))
    for i in range(0, len(metrics), 1000):  # and at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[i:i + 1000], tags=tags if i == 0 else [])
    if not metrics:
        client.log_batch(run_id, tags=tags)
    for name in ARTIFACTS:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    for chart in sorted(run_dir.glob("*.png")):
        client.log_artifact(run_id, str(chart), "charts")
    if gates:
        _log_json(client, run_id, "gates.json", gates)
    client.set_terminated(run_id, "FAILED" if status == "failed" else "FINISHED")
    return record


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys to text values: a task list becomes tasks.0.name, tasks.0.kind, ..."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, inner in enumerate(value):
            out.update(_flatten(inner, f"{prefix}{i}."))
        return out
    text = value if isinstance(value, str) else json.dumps(value)
    return {prefix.rstrip("."): text[:_PARAM_VALUE_MAX]}


def _metric_name(name: str) -> str:
    return _BAD_METRIC_CHARS.sub("_", name)


def _log_json(client, run_id: str, name: str, data: Any, folder: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        client.log_artifact(run_id, str(path), folder)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _record(run_dir: Path, uri: str | None) -> dict | None:
    """The run's `mlflow.json` when it refers to this tracking URI (an earlier attempt's MLflow run is reused)."""
    record = _json(run_dir / RECORD)
    return record if record.get("run_id") and record.get("tracking_uri") == uri else None


# --------------------------------------------------------------------------------------------
# The Model Registry: versions and the alias
# --------------------------------------------------------------------------------------------


def move_alias(pdir: Path, action: str, run_id: str | None) -> str | None:
    """After the promoted pointer moved to `run_id`: point the registry alias at that run's version.

    The version is registered on first need (a run promoted again, or rolled back to, keeps its
    version). With no run to point at, the alias is removed. When MLflow cannot be reached, the
    pipeline folder keeps a marker (`.mlflow_pending`) and the next writer of the pipeline brings the
    alias up to date (`catch_up`). Returns the version the alias now names, or None.
    """
    ok, version = _remove_alias(pdir) if run_id is None else _move_alias(pdir, action, run_id)
    pending = pdir / PENDING
    if ok:
        pending.unlink(missing_ok=True)
    else:
        write_json_atomic(pending, {"action": action, "run": run_id})
    return version


def catch_up(pdir: Path, run_id: str | None) -> None:
    """Sync the alias to the promoted run when an earlier move missed MLflow (called holding the lock)."""
    if (pdir / PENDING).is_file():
        console.log(f"mlflow: the registry alias missed a move while MLflow was unreachable; syncing it to "
                    f"{run_id or 'nothing promoted'}")
        move_alias(pdir, "catch up", run_id)


def _move_alias(pdir: Path, action: str, run_id: str) -> tuple[bool, str | None]:
    run_dir = pdir / run_id
    spec = run_spec(run_dir)
    settings = settings_for(spec) if spec is not None else None
    if settings is None or settings.register_as == "none":
        return True, None  # tracking off for this run: nothing to move

    def body(client) -> str:
        version = _version_of(client, run_dir, spec, settings)
        name = settings.registered_model or spec.name
        client.set_registered_model_alias(name, settings.alias, version)
        console.log(f"mlflow: {name}@{settings.alias} -> version {version} (run {run_id}, {action})")
        return version

    return _best_effort(f"registry alias not moved ({action} {run_id})", settings, body)


def _version_of(client, run_dir: Path, spec: PipelineSpec, settings: MlflowSpec) -> str:
    """The registered version of a run's model, registering it (and logging the run) when it has none."""
    from mlflow.exceptions import MlflowException

    name = settings.registered_model or spec.name
    uri = tracking_uri(settings)
    record = _record(run_dir, uri)
    if record and record.get("registered_model") == name and record.get("version"):
        try:
            client.get_model_version(name, record["version"])
            return str(record["version"])
        except MlflowException:
            pass  # deleted from the registry since: register again
    if record is None:
        manifest = _json(run_dir / "manifest.json")
        record = _log_run(client, run_dir, spec, settings, manifest.get("status", "succeeded"))
    source = _log_model(client, record["run_id"], run_dir, spec, settings)
    try:
        client.create_registered_model(name, description=f"ftpipe pipeline {spec.name}: promoted models")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source, run_id=record["run_id"],
                                          tags={"ftpipe.run_id": run_dir.name, "ftpipe.pipeline": spec.name},
                                          description=f"ftpipe run {run_dir.name}").version
    write_json_atomic(run_dir / RECORD, {**record, "registered_model": name, "version": str(version)})
    return str(version)


def _log_model(client, mlflow_run: str, run_dir: Path, spec: PipelineSpec, settings: MlflowSpec) -> str:
    """Log the run's model under its `model/` artifacts; returns the artifact URI a version points at."""
    manifest = _json(run_dir / "manifest.json")
    adapter, weights = run_dir / "adapter", run_dir / "weights"
    info = {"ftpipe_run": run_dir.name, "pipeline": spec.name, "base_model": spec.base_model,
            "base_model_path": manifest.get("base_model"), "adapter_type": spec.adapter.type}
    with tempfile.TemporaryDirectory() as tmp:
        if weights.is_dir():
            folder, info["format"] = weights, "full_weights"
        elif settings.register_as == "merged":
            from ftpipe.evaluation import tuned_model_spec
            from ftpipe.evaluation.generation import merge_and_save

            folder = merge_and_save(tuned_model_spec(run_dir, spec, manifest.get("base_model") or spec.base_model, "cpu"),
                                    Path(tmp) / "merged")
            info["format"] = "merged"
        else:
            folder, info["format"] = adapter, "peft_adapter"
        staged = Path(tmp) / "model"
        shutil.copytree(folder, staged)
        (staged / "ftpipe_model.json").write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
        client.log_artifacts(mlflow_run, str(staged), "model")
    return f"{client.get_run(mlflow_run).info.artifact_uri.rstrip('/')}/model"


def _remove_alias(pdir: Path) -> tuple[bool, None]:
    """No run is promoted any more: the alias of the pipeline's last registered model goes too."""
    for run_dir in sorted((p for p in pdir.iterdir() if not p.is_symlink() and (p / RECORD).is_file()), reverse=True):
        spec = run_spec(run_dir)
        settings = settings_for(spec) if spec is not None else None
        record = _json(run_dir / RECORD)
        if settings is None or not record.get("registered_model"):
            continue

        def body(client) -> None:
            client.delete_registered_model_alias(record["registered_model"], settings.alias)
            console.log(f"mlflow: removed alias {record['registered_model']}@{settings.alias} (nothing promoted)")

        return _best_effort("registry alias not removed", settings, body)[0], None
    return True, None


def run_spec(run_dir: Path) -> PipelineSpec | None:
    """The spec a run folder was trained with (its spec.yaml), or None when it cannot be read."""
    import yaml

    try:
        return PipelineSpec.model_validate(yaml.safe_load((run_dir / "spec.yaml").read_text(encoding="utf-8")))
    except Exception:  # a damaged or missing spec.yaml: nothing to sync, the pointer itself is fine
        return None


# --------------------------------------------------------------------------------------------
# Best effort
# --------------------------------------------------------------------------------------------


def _best_effort(what: str, settings: MlflowSpec, body: Callable[[Any], T]) -> tuple[bool, T | None]:
    """(True, `body(MlflowClient)`), or (False, None): any failure (extra missing, server down, store error) is one warning line."""
    uri = tracking_uri(settings)
    down = _unreachable(uri, settings.timeout_s)
    if down:
        console.log(f"warning: MLflow tracking server {uri} unreachable ({down}); {what} "
                    f"(the run folder and ftpipe's history have everything)")
        return False, None
    try:
        from mlflow import MlflowClient
    except ImportError:
        console.log(f"warning: MLflow tracking is on but mlflow is not installed; {what} "
                    f"(pip install 'ftpipe[mlflow]', or unset MLFLOW_TRACKING_URI)")
        return False, None
    with _quick_http(settings.timeout_s):
        try:
            return True, body(MlflowClient(tracking_uri=uri, registry_uri=settings.registry_uri or uri))
        except Exception as e:  # noqa: BLE001 - whatever MLflow raises, the run goes on
            first = (str(e).strip().splitlines() or [""])[0][:200]
            console.log(f"warning: MLflow failed ({type(e).__name__}: {first}); {what}")
            return False, None


@contextmanager
def _quick_http(timeout_s: float):
    """Fail within the timeout instead of MLflow's default of 7 retries with backoff (minutes); restored after."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout_s)))}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _unreachable(uri: str | None, timeout_s: float) -> str | None:
    """Why an http(s) tracking server cannot be reached (connection refused, timeout), or None."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout_s).close()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None
