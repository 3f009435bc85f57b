"""The error types of bad input, each the one line the CLI prints before exit 2 (their own module, torch-free, so
every conf/ module can raise them and a command that draws only can catch them). Both are utils.InputError:
utils.command_shell prints them in one line and exits 2."""

from utils import InputError


class SettingsError(InputError, ValueError):
    """A bad key or value; the message is the one line the CLI prints."""


class DataError(InputError):
    """One-line, user-facing: what data is missing and how to fix it (data/ raises it)."""
