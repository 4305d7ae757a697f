"""Reading typed values out of one TOML table, with errors that name the key.

Every section builder reads its table through :class:`Table`: each read
names the accepted spellings of a key (ours first, then the seeds'), and
:meth:`Table.finish` rejects whatever was not read, so a misspelt key is an
error with a suggestion instead of a silently ignored setting.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cachet.config.enums import parse_enum, parse_scheme
from cachet.config.errors import ConfigError
from cachet.crypto.schemes import SignatureScheme

__all__ = ["Table", "check_schemes", "describe", "parse_duration_ms"]

E = TypeVar("E", bound=enum.Enum)

_UNIT_MS: dict[str, int] = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
}
# One or more "<number><unit>" parts: "500ms", "5s", "1h30m", "1.5s".
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")


def describe(value: Any) -> str:
    """A value as the TOML file spelt it, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def parse_duration_ms(value: Any, key: str, *, allow_zero: bool = False) -> int:
    """A duration in whole milliseconds.

    Accepts an integer (milliseconds) or a string of number+unit parts with
    units ``ms``, ``s``, ``m``, ``h``, ``d`` ("100ms", "5s", "24h", "1h30m",
    "1.5s"). Negative, fractional-millisecond, unit-less strings and floats
    are refused: a freshness window must mean one thing. Zero is refused
    unless ``allow_zero``. Raises :class:`ConfigError` naming ``key``.
    """
    expected = "expected a duration (integer milliseconds, or a string like '100ms', '5s', '24h')"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(None, key, f"{expected}, got {describe(value)}")
    if isinstance(value, int):
        ms = value
    else:
        text = value.strip()
        if text.startswith("-"):
            raise ConfigError(None, key, f"a duration cannot be negative, got {describe(value)}")
        pos, total = 0, 0.0
        while pos < len(text):
            match = _PART.match(text, pos)
            if match is None or match.end() == pos:
                raise ConfigError(None, key, f"{expected}, got {describe(value)}")
            total += float(match.group(1)) * _UNIT_MS[match.group(2)]
            pos = match.end()
        if not text:
            raise ConfigError(None, key, f"{expected}, got {describe(value)}")
        if total != int(total):
            raise ConfigError(
                None, key, f"a duration must be whole milliseconds, got {describe(value)}"
            )
        ms = int(total)
    if ms < 0:
        raise ConfigError(None, key, f"a duration cannot be negative, got {describe(value)}")
    if ms == 0 and not allow_zero:
        raise ConfigError(None, key, f"a duration must be positive, got {describe(value)}")
    return ms


class Table:
    """One TOML table being read; ``prefix`` is its dotted path."""

    def __init__(self, data: Any, prefix: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(None, prefix, f"expected a table, got {describe(data)}")
        self.data: Mapping[str, Any] = data
        self.prefix = prefix
        self._known: list[str] = []

    def key(self, name: str) -> str:
        """The dotted path of ``name`` in this table."""
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(None, self.key(name), reason)

    def take(self, *names: str) -> tuple[str, Any] | None:
        """The (spelling, value) of the first of ``names`` present, or None.

        Two spellings of one setting at once is an error: which one wins
        would be a guess.
        """
        self._known.extend(names)
        present = [n for n in names if n in self.data]
        if len(present) > 1:
            raise self.error(present[1], f"same setting as '{present[0]}'; set only one")
        return (present[0], self.data[present[0]]) if present else None

    def finish(self, extra_known: Sequence[str] = ()) -> None:
        """Refuse every key that no read asked for, suggesting the closest."""
        known = [*self._known, *extra_known]
        for name in self.data:
            if name in known:
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.error(name, f"unknown key{hint}")

    # -- typed readers -----------------------------------------------------

    def str_(self, names: Sequence[str], default: str, *, pattern: str | None = None) -> str:
        got = self.take(*names)
        if got is None:
            return default
        name, value = got
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {describe(value)}")
        if not value.strip():
            raise self.error(name, "expected a non-empty string")
        if pattern is not None and re.fullmatch(pattern, value) is None:
            raise self.error(name, f"{describe(value)} does not match {pattern}")
        return value

    def opt_str(self, names: Sequence[str]) -> str | None:
        got = self.take(*names)
        if got is None:
            return None
        name, value = got
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"expected a non-empty string, got {describe(value)}")
        return value

    def int_(
        self, names: Sequence[str], default: int, *, min: int | None = None, max: int | None = None
    ) -> int:
        got = self.take(*names)
        if got is None:
            return default
        return self.check_int(got[0], got[1], min=min, max=max)

    def check_int(
        self, name: str, value: Any, *, min: int | None = None, max: int | None = None
    ) -> int:
        # bool is an int in Python; "true" for a port is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            what = "a positive integer" if min == 1 else "an integer"
            raise self.error(name, f"expected {what}, got {describe(value)}")
        if min is not None and value < min:
            what = "a positive integer" if min == 1 else f"an integer >= {min}"
            raise self.error(name, f"expected {what}, got {value}")
        if max is not None and value > max:
            raise self.error(name, f"expected an integer <= {max}, got {value}")
        return value

    def float_(
        self,
        names: Sequence[str],
        default: float,
        *,
        above: float | None = None,
        at_most: float | None = None,
    ) -> float:
        """A number in (``above``, ``at_most``]."""
        got = self.take(*names)
        if got is None:
            return default
        name, value = got
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {describe(value)}")
        number = float(value)
        if (above is not None and number <= above) or (at_most is not None and number > at_most):
            raise self.error(name, f"expected a number in ({above}, {at_most}], got {value}")
        return number

    def bool_(self, names: Sequence[str], default: bool) -> bool:
        got = self.take(*names)
        if got is None:
            return default
        name, value = got
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {describe(value)}")
        return value

    def must_be_true(self, names: Sequence[str], why: str) -> None:
        """Accept a seed's switch only in its on position: ``why`` says why."""
        got = self.take(*names)
        if got is None:
            return
        name, value = got
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {describe(value)}")
        if not value:
            raise self.error(name, f"cannot be false: {why}")

    def fixed(self, names: Sequence[str], allowed: Sequence[str], why: str) -> None:
        """Accept a seed's setting only with the value the design fixes."""
        got = self.take(*names)
        if got is None:
            return
        name, value = got
        if not isinstance(value, str) or value.strip().lower() not in [a.lower() for a in allowed]:
            raise self.error(
                name,
                f"only {' or '.join(repr(a) for a in allowed)} is supported ({why}), "
                f"got {describe(value)}",
            )

    def enum_(self, names: Sequence[str], cls: type[E], default: E) -> E:
        got = self.take(*names)
        if got is None:
            return default
        return self.check_enum(got[0], got[1], cls)

    def check_enum(self, name: str, value: Any, cls: type[E]) -> E:
        choices = ", ".join(repr(m.value) for m in cls if m.name != "UNKNOWN")
        if not isinstance(value, str):
            raise self.error(name, f"expected one of {choices}, got {describe(value)}")
        try:
            return parse_enum(cls, value)
        except ValueError:
            raise self.error(name, f"expected one of {choices}, got {describe(value)}") from None

    def str_list(
        self, names: Sequence[str], default: tuple[str, ...], *, non_empty: bool = True
    ) -> tuple[str, ...]:
        got = self.take(*names)
        if got is None:
            return default
        name, value = got
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, f"expected an array of non-empty strings, got {describe(value)}")
        if non_empty and not value:
            raise self.error(name, "expected at least one entry")
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise self.error(name, f"duplicate entries: {', '.join(dupes)}")
        return tuple(value)

    def path(self, names: Sequence[str], default: Path) -> Path:
        return Path(self.str_(names, str(default)))

    def opt_path(self, names: Sequence[str]) -> Path | None:
        text = self.opt_str(names)
        return None if text is None else Path(text)

    def duration_ms(
        self, names: Mapping[str, int], default: int, *, allow_zero: bool = False
    ) -> int:
        """A duration under any of ``names`` -> unit in ms for a bare integer.

        ``{"max_staleness_ms": 1, "max_staleness": 1}`` reads integers as
        milliseconds; ``{"phi_seconds": 1000}`` reads them as seconds. A
        string always carries its own unit.
        """
        got = self.take(*names)
        if got is None:
            return default
        name, value = got
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0 or (value == 0 and not allow_zero):
                what = "a non-negative" if allow_zero else "a positive"
                raise self.error(name, f"expected {what} integer, got {value}")
            return value * names[name]
        return parse_duration_ms(value, self.key(name), allow_zero=allow_zero)


def check_schemes(table: Table, name: str, value: Any) -> tuple[SignatureScheme, ...]:
    """A non-empty array of scheme names, as a set in SignatureScheme order.

    An unknown name is an error, never skipped: dropping a scheme from a
    "required" list would weaken every check that relies on it.
    """
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise table.error(
            name, f"expected a non-empty array of scheme names, got {describe(value)}"
        )
    schemes: list[SignatureScheme] = []
    for text in value:
        try:
            scheme = parse_scheme(text)
        except ValueError:
            known = ", ".join(s.value for s in SignatureScheme)
            raise table.error(
                name, f"unknown signature scheme {text!r}; expected one of {known}"
            ) from None
        if scheme in schemes:
            raise table.error(name, f"{text!r} names {scheme.value} twice")
        schemes.append(scheme)
    return tuple(s for s in SignatureScheme if s in schemes)
