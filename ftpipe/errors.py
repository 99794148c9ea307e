"""One error hierarchy; only the CLI turns these into exit codes and one-line messages."""

from __future__ import annotations

# Documented exit codes (README "Exit codes"). Scheduled jobs branch on these.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_LOCKED = 4


class FtpipeError(Exception):
    """An error a person can act on: a one-line message plus an optional hint."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint on one line, as the CLI prints it."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadInputError(FtpipeError):
    """The user's spec, data or arguments are wrong: exit code 2."""

    exit_code = EXIT_BAD_INPUT


class SpecError(BadInputError):
    """A pipeline spec failed validation."""


class DataError(BadInputError):
    """A data source, template or row is unusable."""


class ModelNotFoundError(BadInputError):
    """A base model name or path cannot be resolved."""


class CompileError(FtpipeError):
    """The compiled Ludwig config was rejected or altered by Ludwig: a compiler bug."""


class TrainError(FtpipeError):
    """Training failed."""


class EvalError(FtpipeError):
    """Evaluation failed."""


class RunNotFoundError(BadInputError):
    """A run id or folder does not exist."""


class CorruptStateError(FtpipeError):
    """A manifest, the history database or a store entry is damaged; the message names the way out."""


class StorageError(FtpipeError):
    """A file could not be written (disk full, a file-size limit, a read-only folder)."""


class LockedError(FtpipeError):
    """Another run of the same pipeline holds the lock."""

    exit_code = EXIT_LOCKED


class GateFailedError(FtpipeError):
    """The tuned model failed a quality gate; nothing was promoted."""

    exit_code = EXIT_GATE_FAILED
