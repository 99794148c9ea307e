"""Run folders, their manifest, and the per-pipeline lock.

Layout: `<runs root>/<pipeline>/<UTC time>-<short hash>/`, holding the resolved spec, the compiled
Ludwig config, Ludwig's output, the model, predictions, metrics, the report and `manifest.json`.
A run's status becomes `succeeded` only after everything else is written; a killed run stays
`running` in its manifest and is shown as `interrupted` once nobody holds the pipeline's lock.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ftpipe.errors import LockedError, RunNotFoundError
from ftpipe.files import write_json_atomic
from ftpipe.paths import runs_root
from ftpipe.version import __version__

MANIFEST = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
Status = Literal["running", "succeeded", "failed"]


class Manifest(BaseModel):
    """What a run was, where it came from, and how it ended."""

    schema_version: int = MANIFEST_SCHEMA_VERSION
    run_id: str
    pipeline: str
    status: Status = "running"
    spec_path: str
    spec_hash: str
    data_fingerprint: str | None = None
    config_hash: str | None = None
    base_model: str | None = None
    base_model_fingerprint: str | None = None
    adapter: str | None = None
    device: str | None = None
    seed: int | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None
    hostname: str = Field(default_factory=platform.node)
    pid: int = Field(default_factory=os.getpid)
    started_at: str = Field(default_factory=lambda: now_iso())
    finished_at: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    attempts: int = 1
    error: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict)


def now_iso() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def new_run_id(spec_hash: str) -> str:
    """`<UTC time>-<short spec hash>`: sorts by time, and names the spec it ran."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + spec_hash[:8]


def save_manifest(run_dir: Path, manifest: Manifest) -> None:
    """Persist a manifest atomically."""
    write_json_atomic(run_dir / MANIFEST, manifest.model_dump(mode="json"))


def load_manifest(run_dir: Path) -> Manifest:
    """Read a run's manifest (upgrading older schema versions when there are any)."""
    path = run_dir / MANIFEST
    if not path.exists():
        raise RunNotFoundError(f"{run_dir}: not a run folder (no {MANIFEST})", hint="see `ftpipe runs list`")
    return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what a run computes (read from metadata, no imports)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"ftpipe": __version__, "python": platform.python_version()}
    for name in ("ludwig", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def git_commit(path: Path) -> str | None:
    """The commit of the repository holding `path`, with `+dirty` when it has changes; None outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=path, capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------------------------


class PipelineLock:
    """One run of a pipeline at a time. The OS releases the lock when its holder dies, even by SIGKILL."""

    def __init__(self, pipeline_dir: Path):
        from filelock import FileLock

        pipeline_dir.mkdir(parents=True, exist_ok=True)
        self.info_path = pipeline_dir / ".lock.json"
        self._lock = FileLock(str(pipeline_dir / ".lock"))

    def acquire(self, run_description: str) -> None:
        """Take the lock or raise LockedError naming the holder."""
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = self.holder() or {}
            raise LockedError(
                f"pipeline is locked by a running job: pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                f"{holder.get('run', '?')}, since {holder.get('since', '?')}",
                hint="wait for it to finish; the lock frees itself when that process exits") from None
        write_json_atomic(self.info_path, {"pid": os.getpid(), "host": platform.node(), "run": run_description, "since": now_iso()})

    def holder(self) -> dict | None:
        """Who holds (or last held) the lock."""
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def is_held(self) -> bool:
        """Whether some process holds the lock now (probes without keeping it)."""
        from filelock import Timeout

        if self._lock.is_locked:
            return True
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return True
        self._lock.release()
        return False

    def release(self) -> None:
        """Release the lock."""
        if self._lock.is_locked:
            self._lock.release(force=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# --------------------------------------------------------------------------------------------
# Finding runs
# --------------------------------------------------------------------------------------------


def pipeline_dir(pipeline: str, root: Path | None = None) -> Path:
    """Folder of one pipeline's runs."""
    return (root or runs_root()) / pipeline


def list_runs(root: Path | None = None, pipeline: str | None = None) -> list[tuple[Path, Manifest]]:
    """Every run under the root (newest first), optionally of one pipeline."""
    root = root or runs_root()
    if not root.exists():
        return []
    pipelines = [root / pipeline] if pipeline else sorted(p for p in root.iterdir() if p.is_dir())
    found = []
    for pdir in pipelines:
        if not pdir.is_dir():
            continue
        for run_dir in pdir.iterdir():
            if not run_dir.is_symlink() and (run_dir / MANIFEST).exists():  # `promoted` is a pointer, not a run
                try:
                    found.append((run_dir, load_manifest(run_dir)))
                except ValueError:
                    continue
    return sorted(found, key=lambda x: x[1].started_at, reverse=True)


def display_status(run_dir: Path, manifest: Manifest) -> str:
    """`interrupted` for a run still marked running whose pipeline lock nobody holds."""
    if manifest.status == "running" and not PipelineLock(run_dir.parent).is_held():
        return "interrupted"
    return manifest.status


def find_run(ref: str, root: Path | None = None) -> Path:
    """A run by folder path, by id, or by a unique id prefix."""
    path = Path(ref)
    if (path / MANIFEST).exists():
        return path
    matches = [d for d, m in list_runs(root) if m.run_id == ref or m.run_id.startswith(ref) or d.name == ref]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFoundError(f"no run {ref!r} under {root or runs_root()}", hint="see `ftpipe runs list`")
    raise RunNotFoundError(f"{ref!r} matches {len(matches)} runs", hint="give more of the run id")


def resumable_run(pipeline: str, spec_hash: str, root: Path | None = None) -> Path | None:
    """The newest run of the same spec that was killed mid-way (call while holding the lock).

    A run that failed with an error starts over instead: resuming would likely meet the same error.
    """
    for run_dir, manifest in list_runs(root, pipeline):
        if manifest.spec_hash != spec_hash:
            continue
        return run_dir if manifest.status == "running" else None
    return None


# --------------------------------------------------------------------------------------------
# Promotion: an atomic pointer to the run in service
# --------------------------------------------------------------------------------------------

PROMOTED = "promoted"


def promoted_run(pipeline: str, root: Path | None = None) -> Path | None:
    """The run folder the pipeline's `promoted` pointer names, if any."""
    link = pipeline_dir(pipeline, root) / PROMOTED
    if not link.is_symlink():
        return None
    target = link.parent / os.readlink(link)
    return target if target.exists() else None


def set_promoted(run_dir: Path) -> None:
    """Point `<pipeline>/promoted` at a run: a new symlink renamed over the old one, never half-written."""
    pdir = run_dir.parent
    tmp = pdir / f".{PROMOTED}.tmp{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, pdir / PROMOTED)
