"""The one error type of bad settings (its own module so every conf/ module can raise it)."""


class SettingsError(ValueError):
    """A bad key or value; the message is the one line the CLI prints."""
