"""What a spec names must exist: data files, the columns its templates read, the base model.

These checks read only file headers (no pandas, torch or Ludwig), so `ftpipe validate` stays
instant; every problem is one located line, `file:line:col field: message`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ftpipe.data.formats import peek_columns
from ftpipe.data.templates import task_fields
from ftpipe.errors import SpecError
from ftpipe.models.registry import KNOWN_MODELS
from ftpipe.spec import LoadedSpec, display_path, hidden_escape, load_spec, project_root
from ftpipe.spec.schema import CONVERSATION_FORMATS


def validate_spec(path: str | Path, overrides: list[str] | None = None) -> LoadedSpec:
    """Load a spec and check everything it names; raise SpecError with one located line per problem."""
    loaded = load_spec(path, overrides)
    check_references(loaded)
    return loaded


def check_references(loaded: LoadedSpec) -> None:
    """Raise SpecError listing every missing file, unknown column or unresolvable base model."""
    problems = reference_problems(loaded)
    if problems:
        raise SpecError("\n".join(problems))


def reference_problems(loaded: LoadedSpec) -> list[str]:
    """Checks that need the file system but not torch: files exist, templates name real columns, model resolves."""
    spec, problems = loaded.spec, []
    where = loaded.where
    root = project_root(loaded.base_dir)

    problems += _check_base_model(spec.base_model, loaded, where(("base_model",)), KNOWN_MODELS)
    task_locs = [("tasks", i) for i in range(len(spec.tasks))]
    task_locs += [("evaluation", "held_out", i) for i in range(len(spec.evaluation.held_out))]
    task_locs += [("data", "replay", "task")] if spec.data.replay and spec.data.replay.task else []
    checked = list(zip(spec.all_tasks(), task_locs))
    if spec.data.replay and spec.data.replay.self_generated:  # its prompt pool: a file with the prompt's columns
        checked.append((spec.data.replay.self_generated.pool_task(), ("data", "replay", "self_generated")))
    for task, tloc in checked:
        src = task.source
        if src is None:  # an lm_eval probe (issue 17): its task YAML must exist; a registered name is lm-eval's to resolve
            if task.lm_eval.is_file() and not loaded.resolve(task.lm_eval.task).is_file():
                problems.append(f"{where(tloc + ('lm_eval', 'task'))} {_dotted(tloc)}.lm_eval.task: no such file "
                                f"{task.lm_eval.task} (paths are relative to {display_path(loaded.base_dir)})")
            continue
        for key in ("path", "train", "validation", "test"):
            value = getattr(src, key)
            if value is not None and not loaded.resolve(value).exists():
                problems.append(f"{where(tloc + ('source', key))} {_dotted(tloc)}.source.{key}: no such file {value} "
                                f"(paths are relative to {display_path(loaded.base_dir)})")
            elif value is not None and (escape := hidden_escape(loaded.resolve(value), root)) is not None:
                problems.append(f"{where(tloc + ('source', key))} {_dotted(tloc)}.source.{key}: {value} is a symlink to "
                                f"{escape}, outside the project {root} (name the real path, or copy the file in)")
        for key in ("path", "train", "validation", "test"):
            value = getattr(src, key)
            if value is not None and _is_blank(loaded.resolve(value)):
                problems.append(f"{where(tloc + ('source', key))} {_dotted(tloc)}.source.{key}: {value} is empty "
                                f"(no rows)")
        first = src.path or src.train
        if first is None or not loaded.resolve(first).exists() or _is_blank(loaded.resolve(first)):
            continue
        columns = None if src.read_options else peek_columns(loaded.resolve(first), src.format)
        if columns is None:  # format whose columns are only known after a full read
            continue
        available = set(columns) | set(task.fields)
        for name in sorted(task_fields(task) - available):
            if task.is_conversation():  # issue 17: the format names the field that holds the turns
                other = next((f for f, col in CONVERSATION_FORMATS.items() if col in columns), None)
                hint = f"set source.format: {other}" if other else f"columns: {', '.join(sorted(columns))}"
                problems.append(f"{where(tloc + ('source', 'format'))} {_dotted(tloc)}: a {src.format} source reads the "
                                f"turns from field '{name}', which {first} lacks ({hint}; or map it under fields:)")
                continue
            close = difflib.get_close_matches(name, sorted(available), n=1)
            hint = f"did you mean {close[0]}?" if close else f"columns: {', '.join(sorted(columns))}"
            problems.append(f"{where(tloc + ('prompt',))} {_dotted(tloc)}: template names missing field "
                            f"'{name}' ({hint}; or map it under fields:)")
        for name, column in task.fields.items():
            if column not in columns:
                problems.append(f"{where(tloc + ('fields', name))} {_dotted(tloc)}.fields.{name}: no column "
                                f"'{column}' in {first} (columns: {', '.join(sorted(columns))})")
    return problems


def _is_blank(path: Path) -> bool:
    """A file with nothing but whitespace (and perhaps a byte-order mark); a compressed file is never blank here."""
    if not path.is_file() or path.suffix == ".gz":
        return False
    with path.open("rb") as f:
        head = f.read(1 << 16)
    return not head.removeprefix(b"\xef\xbb\xbf").strip() and path.stat().st_size <= len(head)


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _check_base_model(ref: str, loaded: LoadedSpec, where: str, known: dict) -> list[str]:
    if ref in known:
        return []
    candidate = loaded.resolve(ref)
    if candidate.is_dir():
        if (candidate / "config.json").exists():
            return []
        return [f"{where} base_model: {ref} has no config.json (not a Hugging Face model folder)"]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", ref) and not ref.startswith("."):
        return []  # a hub id: resolved from the hub cache at run time
    close = difflib.get_close_matches(ref, list(known), n=1)
    hint = f"did you mean {close[0]}?" if close else f"store models: {', '.join(known)}"
    return [f"{where} base_model: unknown model '{ref}' ({hint}; or give a local folder or a hub id org/name)"]


