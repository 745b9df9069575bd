"""Types and domains of config values: every key of every group has one, and a value outside it is refused in one
line naming the key, the value and what is allowed. Each part (task, model, loss, optim, measure) declares the
schema of its own keys next to its code (`SCHEMA`); `grokpipe.config.validate` checks a composed config against them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from grokpipe.core.errors import ConfigError


def refuse(key: str, value, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_finite(v) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond the float range: no float the code computes with can hold it
        return False


@dataclass(frozen=True)
class Int:
    lo: int | None = None
    hi: int | None = None

    def check(self, key: str, v) -> None:
        if not isinstance(v, int) or isinstance(v, bool):
            refuse(key, v, f"must be an integer{self._range()}")
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            refuse(key, v, f"must be an integer{self._range()}")

    def _range(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f" in {self.lo}..{self.hi}"
        return f" >= {self.lo}" if self.lo is not None else (f" <= {self.hi}" if self.hi is not None else "")


@dataclass(frozen=True)
class Float:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def check(self, key: str, v) -> None:
        ok = _is_number(v) and _is_finite(v)
        if ok and self.lo is not None:
            ok = v > self.lo if self.lo_open else v >= self.lo
        if ok and self.hi is not None:
            ok = v < self.hi if self.hi_open else v <= self.hi
        if not ok:
            refuse(key, v, f"must be a finite number{self._range()}")

    def _range(self) -> str:
        lo = "" if self.lo is None else f"{'(' if self.lo_open else '['}{self.lo:g}"
        hi = "" if self.hi is None else f"{self.hi:g}{')' if self.hi_open else ']'}"
        if lo and hi:
            return f" in {lo}, {hi}"
        if lo:
            return f" {'>' if self.lo_open else '>='} {self.lo:g}"
        return f" {'<' if self.hi_open else '<='} {self.hi:g}" if hi else ""


@dataclass(frozen=True)
class Bool:
    def check(self, key: str, v) -> None:
        if not isinstance(v, bool):
            refuse(key, v, "must be true or false")


@dataclass(frozen=True)
class Choice:
    values: tuple

    def check(self, key: str, v) -> None:
        if isinstance(v, bool) or v not in self.values:
            refuse(key, v, f"one of {', '.join(map(str, self.values))}")


@dataclass(frozen=True)
class Str:
    def check(self, key: str, v) -> None:
        if not isinstance(v, str) or not v:
            refuse(key, v, "must be a non-empty string")


@dataclass(frozen=True)
class Nullable:
    inner: object

    def check(self, key: str, v) -> None:
        if v is not None:
            try:
                self.inner.check(key, v)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (or null)") from None


@dataclass(frozen=True)
class Tuple:
    items: tuple  # one domain per position

    def check(self, key: str, v) -> None:
        if not isinstance(v, (list, tuple)) or len(v) != len(self.items):
            refuse(key, v, f"must be a list of {len(self.items)} values")
        for i, (dom, x) in enumerate(zip(self.items, v)):
            dom.check(f"{key}[{i}]", x)


@dataclass(frozen=True)
class Section:
    """A nested mapping with its own schema (e.g. optim.grokfast)."""

    schema: dict

    def check(self, key: str, v) -> None:
        if not isinstance(v, dict):
            refuse(key, v, f"must be a mapping of {', '.join(self.schema)}")
        check_node(v, self.schema, key)


@dataclass(frozen=True)
class Mapping:
    """A mapping whose entries the part checks itself (a measure's thresholds, against its columns)."""

    def check(self, key: str, v) -> None:
        if not isinstance(v, dict):
            refuse(key, v, "must be a mapping")


@dataclass(frozen=True)
class Anything:
    def check(self, key: str, v) -> None:
        pass


def check_node(node: dict, schema: dict, prefix: str) -> None:
    """Every key of `node` known to `schema` and inside its domain; keys the schema needs present."""
    for k, v in node.items():
        key = f"{prefix}.{k}"
        if k not in schema:
            raise ConfigError(f"{key} is not allowed: {prefix} has the keys {', '.join(schema)}")
        schema[k].check(key, v)
    for k in schema:
        if k not in node:
            raise ConfigError(f"{prefix}.{k} is missing: {prefix} needs {', '.join(schema)}")
