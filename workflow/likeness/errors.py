"""Errors that reach the user as one readable line instead of a traceback."""


class LikenessError(Exception):
    """Base class: the message is meant for the user, on one line."""


class ConfigError(LikenessError):
    """A config value is missing, of the wrong type or inconsistent; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key '{key}': {message}")
        self.key = key


class SourceError(LikenessError):
    """The PhotoPrism database could not be read or the person could not be resolved."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """An exception's text as one line (whitespace folded), cut to ``limit`` characters."""
    text = " ".join(str(error).split())
    return text[:limit] or type(error).__name__
