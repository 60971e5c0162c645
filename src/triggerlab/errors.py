"""User-facing errors: the CLI turns each into one message and exit status 2."""

from __future__ import annotations

from pathlib import Path


class TriggerlabError(Exception):
    """Bad input from the user (a config, a file, an argument), not a bug."""


class ConfigError(TriggerlabError):
    """A config value or an argument is invalid."""


class DataFormatError(TriggerlabError):
    """A dataset file is missing, truncated or not in the expected format."""


class ArgumentError(ConfigError):
    """A bad argument of a library call, named as the Python parameter (``workers: ...``,
    ``overrides 'x=': ...``); ``shown`` is the offending value as the message quotes it.

    The command line shows the flag that set it instead (``--workers: ...``), so
    library messages never name flags.
    """

    def __init__(self, argument: str, message: str, shown: str = "") -> None:
        self.argument = argument
        self.message = message
        self.value = f" {shown}" if shown else ""
        super().__init__(f"{argument}{self.value}: {message}")

    def shown_as(self, name: str) -> str:
        """The message with the argument called ``name`` (a flag)."""
        return f"{name}{self.value}: {self.message}"


class RunFailed(Exception):
    """A run that started and could not finish (training diverged, the model output NaN).

    It is recorded as failed (``failed.json``), never as complete; the command line
    exits with status 1.
    """


class Interrupted(KeyboardInterrupt):
    """A run stopped by the user (Ctrl-C); ``epoch`` is its last checkpoint's, None without one."""

    def __init__(self, run_dir: Path, epoch: int | None) -> None:
        self.run_dir = run_dir
        self.epoch = epoch
        super().__init__(str(run_dir))
