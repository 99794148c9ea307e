"""Loading a spec: YAML with line numbers, `extends:`, `--set` overrides, located one-line errors.

Every error names the file, line and column of the field at fault (or the `--set` that set it).
Checks that need the data files (paths exist, templates name real columns, the base model resolves)
belong to the data layer: `ftpipe.data.check_references`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ftpipe.errors import SpecError
from ftpipe.spec.schema import PipelineSpec

# --------------------------------------------------------------------------------------------
# Loading: YAML with locations, extends, overrides, errors with file:line:col
# --------------------------------------------------------------------------------------------

Location = tuple[str, int, int]  # file, line, column (1-based)


@dataclass
class LoadedSpec:
    """A validated spec with where it came from."""

    spec: PipelineSpec
    path: Path
    raw: dict[str, Any]
    base_dir: Path
    locations: dict[tuple, Location] = field(default_factory=dict)  # key path -> where it is written
    overrides: dict[tuple, str] = field(default_factory=dict)  # key path -> the --set that set it

    def resolve(self, relative: str) -> Path:
        """A path from the spec, relative to the spec file's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def where(self, loc: tuple) -> str:
        """`file:line:col` of a key path (or `--set ...` when an override set it), for error lines."""
        return _locate(loc, self.locations, self.path, self.overrides)

    def spec_hash(self) -> str:
        """sha256 of the resolved spec (after extends and overrides), stable across key order.

        `tracking` is left out: where a run is logged changes nothing it trains or scores.
        """
        blob = json.dumps(self.spec.model_dump(mode="json", exclude={"tracking"}), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _yaml():
    from ruamel.yaml import YAML

    return YAML(typ="rt")


# A spec is a small hand-written file: anything far larger, deeper or more repetitive is refused
# before it can exhaust memory (a YAML "billion laughs" alias bomb expands exponentially).
MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_VALUES = 20_000
MAX_SPEC_DEPTH = 32


def _read_yaml(path: Path) -> Any:
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: {size / 1e6:.1f} MB; a spec is at most {MAX_SPEC_BYTES // 1_000_000} MB",
                            hint="keep data in source files, not in the spec")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file", hint="check the path") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: a folder, not a spec file", hint="give the spec's .yaml file") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start})", hint="a spec is a UTF-8 YAML file") from None
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SpecError(f"{where} invalid YAML: {e.problem}", hint="fix the YAML syntax") from None
    except (YAMLError, RecursionError) as e:
        raise SpecError(f"{path}: invalid YAML ({type(e).__name__})", hint="fix the YAML syntax") from None
    _check_shape(doc, path)
    return doc


def _check_shape(doc: Any, path: Path) -> None:
    """Refuse documents whose aliases expand to too many values, or that nest too deep."""
    budget = [MAX_SPEC_VALUES]
    stack = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise SpecError(f"{path}: YAML aliases expand to more than {MAX_SPEC_VALUES} values (an alias bomb?)",
                            hint="write the spec without repeated alias expansion")
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(f"{path}: nested more than {MAX_SPEC_DEPTH} levels deep", hint="a spec is a shallow mapping")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def project_root(start: Path) -> Path:
    """The git work tree holding `start` (the folder with .git), else `start` itself."""
    start = Path(os.path.abspath(start))
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def hidden_escape(path: Path, root: Path) -> Path | None:
    """Where `path` really leads when a symlink takes it out of `root` although it is written inside it.

    A path written as `../../elsewhere` is visible to whoever reads the spec and is allowed; a path
    that looks local but follows a symlink out of the project (to ~/.ssh, say) is not.
    """
    lexical = Path(os.path.abspath(path))
    real = lexical.resolve()
    if real == lexical or not lexical.is_relative_to(root) or real.is_relative_to(root.resolve()):
        return None
    return real


def _collect_locations(node: Any, path: Path, prefix: tuple, out: dict[tuple, Location]) -> None:
    """Map each key path of a ruamel document to the file, line and column where it is written."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        for key in node:
            line, col = node.lc.key(key)
            out[prefix + (key,)] = (str(path), line + 1, col + 1)
            _collect_locations(node[key], path, prefix + (key,), out)
    elif isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            line, col = node.lc.item(i)
            out[prefix + (i,)] = (str(path), line + 1, col + 1)
            _collect_locations(item, path, prefix + (i,), out)


def _plain(node: Any) -> Any:
    """ruamel containers to plain dicts and lists."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _deep_merge(base: dict, child: dict) -> dict:
    """Child keys override base keys; nested mappings merge, lists are replaced whole."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _rebase_paths(doc: dict, from_dir: Path, to_dir: Path) -> dict:
    """Paths in an extended spec are relative to *its* folder: rewrite them for the child's folder."""
    import os

    def fix(p: Any) -> Any:
        if not isinstance(p, str) or Path(p).is_absolute():
            return p
        return os.path.relpath(from_dir / p, to_dir)

    def walk(node: Any, key: str | None = None) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "source" and isinstance(v, str):
                    out[k] = fix(v)
                elif key == "source" and k in ("path", "train", "validation", "test"):
                    out[k] = fix(v)
                elif key == "lm_eval" and k == "task" and isinstance(v, str) and v.endswith((".yaml", ".yml")):
                    out[k] = fix(v)  # a task YAML file (issue 17), not a registered task name
                else:
                    out[k] = walk(v, k)
            return out
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        return node

    doc = walk(doc)
    if isinstance(doc.get("base_model"), str) and (from_dir / doc["base_model"]).exists():
        doc["base_model"] = fix(doc["base_model"])
    return doc


def _load_with_extends(path: Path, seen: tuple[Path, ...], locations: dict[tuple, Location], root: Path) -> dict:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise SpecError(f"{path}: extends loops back on itself ({chain})", hint="remove the cycle")
    doc = _read_yaml(path)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SpecError(f"{path}:1:1 a spec must be a YAML mapping of fields", hint="see pipelines/ for examples")
    own: dict[tuple, Location] = {}
    _collect_locations(doc, path, (), own)
    plain = _plain(doc)
    parent_ref = plain.pop("extends", None)
    if parent_ref is None:
        locations.update(own)
        return plain
    written = path.parent / str(parent_ref)
    parent_path = written.resolve()
    f, line, col = own[("extends",)]
    if not parent_path.exists():
        raise SpecError(f"{f}:{line}:{col} extends: no such file {parent_ref}", hint="give a path relative to this spec")
    escape = hidden_escape(written, root)
    if escape is not None:
        raise SpecError(f"{f}:{line}:{col} extends: {parent_ref} is a symlink to {escape}, outside the project {root}",
                        hint="name the real path in extends, or copy the file into the project")
    parent = _load_with_extends(parent_path, (*seen, path), locations, root)
    parent = _rebase_paths(parent, parent_path.parent, path.parent)
    locations.update(own)  # the child's lines win where it overrides
    return _deep_merge(parent, plain)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one `--set path.to.key=value`; the value is read as a YAML scalar or flow collection."""
    from ruamel.yaml import YAML

    if "=" not in text:
        raise SpecError(f"--set {text}: expected path.to.key=value", hint="for example --set training.epochs=2")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise SpecError(f"--set {text}: empty key part", hint="for example --set training.epochs=2")
    return parts, _plain(YAML(typ="safe").load(value)) if value.strip() else ""


def _apply_override(doc: dict, parts: list[str], value: Any) -> None:
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(node, list) and part.isdigit() else part
        if isinstance(node, list):
            if not isinstance(key, int) or key >= len(node):
                raise SpecError(f"--set {'.'.join(parts)}: no item {part} in {'.'.join(parts[:i]) or 'spec'}")
            node = node[key]
        else:
            node = node.setdefault(key, {})
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SpecError(f"--set {'.'.join(parts)}: cannot set a field inside a non-mapping value")


def _fields_of(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at the parent of `loc`, for did-you-mean suggestions."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return []
        current = _model_in(info.annotation)
    return list(getattr(current, "model_fields", {}).keys())


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside an annotation like `list[TaskSpec] | None`."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _locate(loc: tuple, locations: dict[tuple, Location], spec_path: Path, overrides: dict[tuple, str]) -> str:
    for n in range(len(loc), -1, -1):
        key = tuple(loc[:n])
        if key in overrides:
            return f"--set {overrides[key]}"
        if key in locations:
            f, line, col = locations[key]
            return f"{_display(Path(f))}:{line}:{col}"
    return f"{_display(spec_path)}:1:1"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's union-branch tags (e.g. 'lora', 'function-after[...]') from an error location."""
    known_tags = {"full", "lora", "qlora", "ia3", "loha", "lokr", "adalora", "str"}
    return tuple(p for p in loc if not (isinstance(p, str) and (p in known_tags or "[" in p)))


def _format_error(err: dict, locations: dict, spec_path: Path, overrides: dict, raw: dict) -> str:
    loc = _clean_loc(tuple(err["loc"]))
    dotted = ".".join(str(p) for p in loc) or "spec"
    where = _locate(loc, locations, spec_path, overrides)
    kind = err["type"]
    if kind == "extra_forbidden":
        options = _fields_of(PipelineSpec, loc)
        close = difflib.get_close_matches(str(loc[-1]), options, n=1)
        hint = f"did you mean {close[0]}?" if close else f"valid fields: {', '.join(options)}"
        return f"{where} {dotted}: unknown field ({hint})"
    if kind == "missing":
        return f"{where} {dotted}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "union_tag_invalid":
        msg = "unknown adapter type; choose one of full, lora, qlora, ia3, loha, lokr, adalora"
    return f"{where} {dotted}: {msg}"


def load_spec(path: str | Path, overrides: list[str] | None = None) -> LoadedSpec:
    """Load, merge and validate a spec file; raise SpecError listing every problem, one line each.

    Only the spec itself is checked here; `ftpipe.data.check_references` checks what it names
    (data files, template fields, the base model).

    Args:
        path: The spec YAML.
        overrides: `path.to.key=value` strings applied after `extends`.
    """
    spec_path = Path(path)
    locations: dict[tuple, Location] = {}
    raw = _load_with_extends(spec_path, (), locations, project_root(spec_path.parent))
    override_locs: dict[tuple, str] = {}
    for text in overrides or []:
        parts, value = parse_override(text)
        _apply_override(raw, parts, value)
        override_locs[tuple(int(p) if p.isdigit() else p for p in parts)] = text
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as e:
        lines = [_format_error(err, locations, spec_path, override_locs, raw) for err in e.errors()]
        raise SpecError("\n".join(dict.fromkeys(lines)), hint=None) from None
    return LoadedSpec(spec=spec, path=spec_path, raw=raw, base_dir=spec_path.resolve().parent,
                      locations=locations, overrides=override_locs)


def load_resolved_spec(resolved: Path, original: Path) -> LoadedSpec:
    """A spec as a run folder saved it (extends and overrides applied); paths stay relative to `original`."""
    import yaml

    spec = PipelineSpec.model_validate(yaml.safe_load(Path(resolved).read_text(encoding="utf-8")))
    return LoadedSpec(spec=spec, path=Path(original), raw={}, base_dir=Path(original).resolve().parent)


def display_path(path: Path) -> str:
    """A path relative to the current folder when it is under it (shorter error lines)."""
    return _display(path)
