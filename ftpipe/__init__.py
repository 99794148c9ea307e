"""ftpipe: declarative LLM fine-tuning on Ludwig, with base-versus-tuned evaluation.

The Python API (`load_spec`, `run`, `evaluate`) is loaded on first use, so `import ftpipe` stays
cheap; see `ftpipe.api`.
"""

from ftpipe.version import __version__

__all__ = ["__version__", "load_spec", "run", "evaluate"]


def __getattr__(name: str):
    if name in ("load_spec", "run", "evaluate"):
        from ftpipe import api

        return getattr(api, name)
    raise AttributeError(f"module 'ftpipe' has no attribute {name!r}")
