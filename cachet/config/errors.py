"""The one error configuration raises: it names the file, the key and why."""

from __future__ import annotations

from cachet.errors import CachetError

__all__ = ["ConfigError"]


class ConfigError(CachetError):
    """A ``cachet.toml`` value that cannot be used.

    ``str(error)`` is always one line, ``"<file>: <dotted.key>: <reason>"``,
    so a CLI or a log line can show it as is and a person can find the key.
    """

    path: str | None
    key: str
    reason: str

    def __init__(self, path: str | None, key: str, reason: str) -> None:
        self.path = path
        self.key = key
        # One line, whatever the reason quotes (a TOML parser message, a
        # value with a newline in it): log scrapers and people read lines.
        self.reason = " ".join(reason.split())
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.key) if p]
        parts.append(self.reason)
        return ": ".join(parts)

    def with_path(self, path: str) -> ConfigError:
        """The same error, attributed to ``path`` (when it named no file)."""
        return ConfigError(self.path or path, self.key, self.reason)
