"""One error type for every configuration problem, worded for the operator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import ValidationError

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """A configuration the node refuses; the message names where (file or variable) and the key.

    `param` is the dotted key path of the first problem ("limits.requests_per_minute"),
    which the admin API reports as the error's `param`.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class FieldError(ValueError):
    """Raised inside validators to point at a key other than the one being validated.

    Pydantic keeps the exception in the error's context, so `from_validation_error`
    can append `loc` to where pydantic says the error happened.
    """

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def key_path(loc: Sequence[str | int]) -> str:
    """`("upstreams", 0, "base_url")` -> `"upstreams[0].base_url"`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def from_validation_error(
    exc: ValidationError, source: str | None, env_sources: Mapping[str, str] | None = None
) -> ConfigError:
    """Turn pydantic's errors into one ConfigError, one line per problem.

    `source` prefixes each line (the file name); a key set from the environment is
    prefixed with the variable's name instead (`env_sources` maps key path -> variable).
    """
    lines: list[str] = []
    first: str | None = None
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        message = err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc, message = loc + cause.loc, cause.message
        elif isinstance(cause, ValueError):
            message = str(cause)
        path = key_path(loc)
        first = path if first is None else first
        if err["type"] == "extra_forbidden":
            text = f"unknown key '{path}'"
        else:
            text = f"{path}: {message}" if path else message
        where = _where(path, source, env_sources or {})
        lines.append(f"{where}: {text}" if where else text)
    return ConfigError("\n".join(lines), param=first or None)


def _where(path: str, source: str | None, env_sources: Mapping[str, str]) -> str | None:
    for key, variable in env_sources.items():
        if path == key or path.startswith((f"{key}.", f"{key}[")):
            return variable
    return source
