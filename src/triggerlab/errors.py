"""User-facing errors: the CLI turns each into one message and exit status 2."""


class TriggerlabError(Exception):
    """Bad input from the user (a config, a file, an argument), not a bug."""


class ConfigError(TriggerlabError):
    """A config value or command-line argument is invalid."""


class DataFormatError(TriggerlabError):
    """A dataset file is missing, truncated or not in the expected format."""
