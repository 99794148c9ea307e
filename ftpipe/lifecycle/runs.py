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

from ftpipe.errors import BadInputError, CorruptStateError, LockedError, RunNotFoundError
from ftpipe.files import write_json_atomic
from ftpipe.paths import runs_root
from ftpipe.version import __version__

MANIFEST = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
# trained: a --no-eval run; it has a model but no verdict, so it is never promoted and never
# counts as "unchanged" for --if-changed. `ftpipe eval` turns it into succeeded.
Status = Literal["running", "trained", "succeeded", "failed"]


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
    stages_done: list[str] = Field(default_factory=list)  # a resumed run skips these
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
    """Read a run's manifest; a damaged one is a CorruptStateError naming `ftpipe runs repair`."""
    from pydantic import ValidationError

    path = run_dir / MANIFEST
    if not path.exists():
        raise RunNotFoundError(f"{run_dir}: not a run folder (no {MANIFEST})", hint="see `ftpipe runs list`")
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        reason = str(e).splitlines()[0][:120]
        raise CorruptStateError(f"{path}: unreadable manifest ({reason})",
                                hint=f"run `ftpipe runs repair {run_dir.parent.name}` to mark the run failed and "
                                     "rebuild the history") from None


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
    """One writer of a pipeline at a time. The OS releases the lock when its holder dies, even by SIGKILL.

    Who holds it is written to `.lock.json` (pid, host, the process's start time). Readers such as
    `ftpipe runs list` answer "is it held?" from that record and the process table alone, never by
    taking the lock, so a reader can never make a starting run fail with "locked".
    """

    def __init__(self, pipeline_dir: Path):
        from filelock import FileLock

        pipeline_dir.mkdir(parents=True, exist_ok=True)
        self.info_path = pipeline_dir / ".lock.json"
        self._lock = FileLock(str(pipeline_dir / ".lock"))
        self.repairs: list[str] = []  # what taking the lock repaired (lifecycle.promotion.locked)

    def acquire(self, what: str, wait_s: float = 0.0) -> None:
        """Take the lock (waiting up to `wait_s`) or raise LockedError naming the holder."""
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=wait_s)
        except Timeout:
            holder = self.holder() or {}
            raise LockedError(
                f"pipeline is locked by a running job: pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                f"{holder.get('run', '?')}, since {holder.get('since', '?')}",
                hint="wait for it to finish; the lock frees itself when that process exits") from None
        write_json_atomic(self.info_path, {"pid": os.getpid(), "host": platform.node(), "run": what, "since": now_iso(),
                                           "process_start": _process_start(os.getpid())})

    def holder(self) -> dict | None:
        """Who holds (or last held) the lock."""
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def is_held(self) -> bool:
        """Whether a live process holds the lock now, judged without touching the lock itself.

        On another host the process table cannot be read, so a record from there counts as held.
        """
        if self._lock.is_locked:
            return True
        info = self.holder()
        if not info or info.get("released"):
            return False
        if info.get("host") != platform.node():
            return True
        pid = int(info.get("pid", -1))
        return pid > 0 and _process_start(pid) is not None and _process_start(pid) == info.get("process_start")

    def release(self) -> None:
        """Release the lock (and mark the record released, so readers stop seeing a holder)."""
        if self._lock.is_locked:
            info = self.holder() or {}
            if info.get("pid") == os.getpid():
                write_json_atomic(self.info_path, {**info, "released": now_iso()})
            self._lock.release(force=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _process_start(pid: int) -> str | None:
    """The start time of a live process (from /proc, so a reused pid is a different process), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (macOS): alive or not is all we can tell
            return "alive"
        except OSError:
            return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the command name


# --------------------------------------------------------------------------------------------
# Finding runs
# --------------------------------------------------------------------------------------------


def pipeline_dir(pipeline: str, root: Path | None = None) -> Path:
    """Folder of one pipeline's runs; a name that is a path (`../x`, `a/b`) is refused, never followed."""
    import re

    from ftpipe.spec.schema import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, pipeline or ""):
        raise BadInputError(f"pipeline name {pipeline!r} is not a name: letters, digits, '_', '.', '-', "
                            "starting with a letter or digit", hint="give the pipeline's name, as its spec's name: field says")
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
                except CorruptStateError:
                    continue  # listed by corrupt_runs(); `ftpipe runs repair` marks it failed
    return sorted(found, key=lambda x: x[1].started_at, reverse=True)


def corrupt_runs(root: Path | None = None, pipeline: str | None = None) -> list[Path]:
    """Run folders whose manifest cannot be read."""
    root = root or runs_root()
    if not root.exists():
        return []
    pipelines = [root / pipeline] if pipeline else sorted(p for p in root.iterdir() if p.is_dir())
    bad = []
    for pdir in pipelines:
        for run_dir in sorted(pdir.iterdir()) if pdir.is_dir() else []:
            if not run_dir.is_symlink() and (run_dir / MANIFEST).exists():
                try:
                    load_manifest(run_dir)
                except CorruptStateError:
                    bad.append(run_dir)
    return bad


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


def interrupted_run(pipeline: str, spec_hash: str, root: Path | None = None) -> Path | None:
    """The newest run of the same spec that was killed mid-way (call while holding the lock), if any.

    A run that failed with an error starts over instead: resuming would likely meet the same error.
    Whether the run can really be resumed (same data, a complete checkpoint) is the caller's check.
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
