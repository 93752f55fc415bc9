"""Reading node.toml: the file, then ROUTSTR_<SECTION>__<KEY> overrides, then *_env secrets."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from routstr_node.config.errors import ConfigError, from_validation_error
from routstr_node.config.models import Settings
from routstr_node.config.patch import LIST_SECTIONS
from routstr_node.identity import secret_from_nsec

ENV_PREFIX = "ROUTSTR_"
DEFAULT_PATH = Path("node.toml")
_TEXT_TYPES: tuple[object, ...] = (str, Path, type(None))


def load_settings(path: Path = DEFAULT_PATH, environ: Mapping[str, str] = os.environ) -> Settings:
    """Load and validate the node's settings; every problem is a ConfigError.

    Precedence, strongest first: environment overrides, the file, the defaults.
    A secret given directly wins over its `*_env` variable.
    """
    source = str(path)
    data = read_toml(path)
    env_sources = apply_env_overrides(data, environ, source)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, source, env_sources) from None
    settings = settings.with_env_secrets(environ)
    _check_at_start(settings, source, env_sources, given_nsec="nsec" in data.get("nostr", {}))
    return settings


def _check_at_start(
    settings: Settings, source: str, env_sources: Mapping[str, str], *, given_nsec: bool
) -> None:
    """What only shows once secrets are read and the disk is looked at: the nostr key
    decodes, and data_dir is (or can become) a directory."""
    nsec = settings.nostr.nsec
    if nsec is not None:
        try:
            secret_from_nsec(nsec)
        except ValueError as exc:
            where = (
                f"{env_sources.get('nostr.nsec', source)}: nostr.nsec"
                if given_nsec
                else f"{settings.nostr.nsec_env} (nostr.nsec_env in {source})"
            )
            raise ConfigError(f"{where}: {exc}", "nostr.nsec") from None
    url = settings.database.url
    if url and urlsplit(url).scheme not in ("postgresql", "postgres"):
        where = env_sources.get("database.url") or (
            f"{settings.database.url_env} (database.url_env in {source})"
        )
        message = "must be empty (SQLite in data_dir) or a postgresql:// URL"
        raise ConfigError(f"{where}: database.url: {message}", "database.url")
    data_dir = settings.node.data_dir
    if data_dir.exists() and not data_dir.is_dir():
        where = env_sources.get("node.data_dir", source)
        message = f"{where}: node.data_dir: {data_dir} exists and is not a directory"
        raise ConfigError(message, "node.data_dir")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse the file with floats as Decimal; errors name the file (and line for syntax)."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f, parse_float=Decimal)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)$", message)
        if found:
            message = message[: found.start()].rstrip()
            raise ConfigError(f"{path}: line {found.group(1)}: {message}") from None
        raise ConfigError(f"{path}: {message}") from None


def apply_env_overrides(
    data: dict[str, Any], environ: Mapping[str, str], source: str
) -> dict[str, str]:
    """Set `data[section][key]` from each ROUTSTR_<SECTION>__<KEY> variable.

    Section and key are case-insensitive. The value is read as JSON when it parses
    (floats as Decimal), else as text; keys that hold text always take the raw text.
    Returns key path -> variable name, so errors can name the variable.
    Only table sections can be overridden; upstreams and models live in the file.
    """
    applied: dict[str, str] = {}
    for variable in sorted(environ):
        if not variable.upper().startswith(ENV_PREFIX) or "__" not in variable:
            continue
        section, _, key = variable[len(ENV_PREFIX) :].lower().partition("__")
        param = f"{section}.{key}"
        if section in LIST_SECTIONS:
            message = f"{variable}: {section} can only be set in the file"
            raise ConfigError(f"{message} (use api_key_env for keys)", section)
        model = _table_model(section)
        if model is None or key not in model.model_fields:
            raise ConfigError(f"{variable}: unknown key '{param}'", param)
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {section}: must be a table", section)
        raw = environ[variable]
        table[key] = raw if _is_text(model.model_fields[key].annotation) else _parse_value(raw)
        applied[param] = variable
    return applied


def _table_model(section: str) -> type[BaseModel] | None:
    field = Settings.model_fields.get(section)
    kind = field.annotation if field else None
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return kind
    return None


def _is_text(annotation: Any) -> bool:
    """Whether a key holds text (str or Path, maybe optional, maybe Annotated)."""
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return all(
        (get_args(option)[0] if get_origin(option) is Annotated else option) in _TEXT_TYPES
        for option in options or (annotation,)
    )


def _parse_value(raw: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=no_constants)
    except ValueError:
        return raw
