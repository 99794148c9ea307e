"""MLflow (issue 17) against a real local store the test creates (SQLite backend, file artifacts): a run is
logged with its spec, losses, scores, gates and artifacts; a promotion registers a version and moves the
`champion` alias; a rollback moves it back; an unreachable server is a warning and the run still succeeds."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'ftpipe[mlflow]')")

from ftpipe.lifecycle import promote, promoted_run, rollback, run_pipeline  # noqa: E402
from ftpipe.training import read_losses  # noqa: E402

SPEC = Path(__file__).parent / "fixtures" / "specs" / "tiny_chat.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_runs_are_logged_promotions_registered_and_the_alias_follows_rollback(tiny_llama_dir, tmp_path, monkeypatch, capfd):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = (tmp_path / "mlartifacts").as_uri()
    root = tmp_path / "runs"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    # Run A: tracking on through the spec's tracking.mlflow section; its gate passes, so it is promoted.
    a = run_pipeline(SPEC, [f"tracking.mlflow.tracking_uri={uri}", f"tracking.mlflow.artifact_location={artifacts}"], root).run_dir
    client = MlflowClient(tracking_uri=uri)
    record = json.loads((a / "mlflow.json").read_text())
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == a.name
    assert run.data.tags["ftpipe.run_id"] == a.name and run.data.tags["ftpipe.status"] == "succeeded"
    params = run.data.params
    assert params["name"] == "tiny-chat" and params["tasks.0.source.format"] == "messages"
    assert params["training.max_steps"] == "3" and params["evaluation.held_out.0.name"] == "say_word"
    losses = read_losses(a)
    assert len(losses) == 3
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(r["step"], pytest.approx(r["loss"])) for r in losses]
    report = json.loads((a / "report.json").read_text())
    for task in report["tasks"]:
        for key in ("base", "tuned", "delta", "ci_low", "ci_high"):
            assert run.data.metrics[f"{task['task']}/{key}"] == pytest.approx(task[key])
    assert run.data.metrics["gates/passed"] == 1.0 and run.data.metrics["gate/min_gain_support_chats_"] == 1.0
    names = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "report.json", "ludwig_config.yaml", "ludwig_config.resolved.yaml", "spec.yaml", "gates.json",
            "charts", "model"} <= names
    assert {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "charts")} >= {"tasks.png"}

    champion = client.get_model_version_by_alias("tiny-chat", "champion")
    assert str(champion.version) == "1" and champion.run_id == run.info.run_id and champion.tags["ftpipe.run_id"] == a.name
    model = Path(unquote(urlparse(champion.source).path))
    assert _sha(model / "adapter_model.safetensors") == _sha(a / "adapter" / "adapter_model.safetensors")
    info = json.loads((model / "ftpipe_model.json").read_text())
    assert info["base_model"] == "tiny-llama" and info["format"] == "peft_adapter" and info["ftpipe_run"] == a.name

    # Run B: tracking on through $MLFLOW_TRACKING_URI, whose server is down: a warning, the run still succeeds
    # and is promoted locally, and the registry is untouched.
    down = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    capfd.readouterr()
    result = run_pipeline(SPEC, ["training.seed=2"], root)
    b = result.run_dir
    err = capfd.readouterr().err
    assert result.manifest.status == "succeeded" and promoted_run("tiny-chat", root) == b
    assert f"warning: MLflow tracking server {down} unreachable" in err and not (b / "mlflow.json").exists()
    assert str(client.get_model_version_by_alias("tiny-chat", "champion").version) == "1"

    assert (root / "tiny-chat" / ".mlflow_pending").is_file()  # the alias move that missed MLflow

    # The store is back: the next writer of the pipeline (here a rollback) first brings the alias up to
    # date (logging B and registering it as version 2), then rolls back to A, and the alias follows.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rollback("tiny-chat", root)
    assert promoted_run("tiny-chat", root) == a and not (root / "tiny-chat" / ".mlflow_pending").exists()
    assert str(client.get_model_version_by_alias("tiny-chat", "champion").version) == "1"
    b_record = json.loads((b / "mlflow.json").read_text())
    assert b_record["version"] == "2" and client.get_run(b_record["run_id"]).data.tags["ftpipe.run_id"] == b.name
    assert "mlflow: tiny-chat@champion -> version 2" in capfd.readouterr().err

    promote(b.name, root)  # promoted again by hand: its version is reused, not registered twice
    assert str(client.get_model_version_by_alias("tiny-chat", "champion").version) == "2"
    assert sorted(str(v.version) for v in client.search_model_versions("name='tiny-chat'")) == ["1", "2"]
    rollback("tiny-chat", root)
    assert str(client.get_model_version_by_alias("tiny-chat", "champion").version) == "1"

def test_tracking_is_off_without_section_or_variable_and_on_with_either(monkeypatch):
    from ftpipe.lifecycle.mlflow_ import settings_for, tracking_uri
    from ftpipe.spec import PipelineSpec

    raw = {"name": "x", "base_model": "tiny-llama", "tasks": [{"name": "a", "source": "a.jsonl", "target": "{{ y }}"}]}
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert settings_for(PipelineSpec.model_validate(raw)) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    env_on = settings_for(PipelineSpec.model_validate(raw))
    assert env_on is not None and tracking_uri(env_on) == "sqlite:///env.db" and env_on.alias == "champion"
    section = settings_for(PipelineSpec.model_validate({**raw, "tracking": {"mlflow": {"tracking_uri": "sqlite:///spec.db"}}}))
    assert tracking_uri(section) == "sqlite:///spec.db"  # the spec's URI wins over the variable


def test_merged_weights_are_registered_when_asked(tiny_chat_run, tmp_path, monkeypatch):
    """`register_as: merged`: the version holds a standalone Hugging Face folder (base + adapter merged)."""
    import shutil

    import yaml
    from mlflow import MlflowClient

    from ftpipe.lifecycle.mlflow_ import move_alias

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "runs" / "tiny-chat" / tiny_chat_run.name  # a copy: the session's run stays as it was
    shutil.copytree(tiny_chat_run, run_dir, ignore=shutil.ignore_patterns("training"))
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    spec["tracking"] = {"mlflow": {"tracking_uri": uri, "artifact_location": (tmp_path / "art").as_uri(),
                                   "register_as": "merged", "alias": "prod"}}
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert move_alias(run_dir.parent, "promote", run_dir.name) == "1"
    version = MlflowClient(tracking_uri=uri).get_model_version_by_alias("tiny-chat", "prod")
    model = Path(unquote(urlparse(version.source).path))
    assert (model / "config.json").is_file() and list(model.glob("*.safetensors")) and not (model / "adapter_config.json").exists()
    assert json.loads((model / "ftpipe_model.json").read_text())["format"] == "merged"


@pytest.mark.slow
def test_against_a_real_tracking_server(tiny_chat_run, tmp_path, monkeypatch):
    """The same through HTTP: an `mlflow server` process (SQLite backend, file artifacts) started here (~1 min)."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from mlflow import MlflowClient

    from ftpipe.lifecycle.mlflow_ import log_run, move_alias
    from ftpipe.lifecycle.mlflow_ import run_spec

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--default-artifact-root", (tmp_path / "server_artifacts").as_uri()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(1)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        run_dir = tmp_path / "runs" / "tiny-chat" / tiny_chat_run.name
        shutil.copytree(tiny_chat_run, run_dir, ignore=shutil.ignore_patterns("training"))
        record = log_run(run_dir, run_spec(run_dir), "succeeded")
        client = MlflowClient(tracking_uri=uri)
        assert client.get_run(record["run_id"]).data.params["tasks.0.source.format"] == "messages"
        assert move_alias(run_dir.parent, "promote", run_dir.name) == "1"
        assert str(client.get_model_version_by_alias("tiny-chat", "champion").version) == "1"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
