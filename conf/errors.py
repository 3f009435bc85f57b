"""The error types of bad input, each the one line the CLI prints before exit 2 (their own module, torch-free, so
every conf/ module can raise them and a command that draws only can catch them)."""


class SettingsError(ValueError):
    """A bad key or value; the message is the one line the CLI prints."""


class DataError(Exception):
    """One-line, user-facing: what data is missing and how to fix it (data/ raises it)."""
