"""Dict-level helpers for the admin API: merge a PATCH, hide and restore secrets."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from routstr_node.config.errors import ConfigError

REDACTED = "[REDACTED]"

#: Secret keys of the table sections; upstreams carry theirs in `api_key`. A database
#: URL may hold the database's password.
SECTION_SECRETS = {"admin": "password", "nostr": "nsec", "database": "url"}
LIST_SECTIONS = ("upstreams", "models")


def merge_patch(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Sections merge key by key; lists and anything else are replaced whole.

    Unknown sections and keys are left in place for validation to report.
    """
    if not isinstance(patch, Mapping):
        raise ConfigError("settings must be an object", param=None)
    merged = copy.deepcopy(dict(current))
    for section, value in patch.items():
        old = merged.get(section)
        if section not in LIST_SECTIONS and isinstance(old, dict) and isinstance(value, Mapping):
            merged[section] = {**old, **copy.deepcopy(dict(value))}
        else:
            merged[section] = copy.deepcopy(value)
    return merged


def redact(data: dict[str, Any]) -> dict[str, Any]:
    """Replace every secret that is set by "[REDACTED]" (in place; returns `data`)."""
    for section, key in SECTION_SECRETS.items():
        table = data.get(section)
        if isinstance(table, dict) and table.get(key):  # unset: None, or "" (database.url)
            table[key] = REDACTED
    for upstream in data.get("upstreams") or []:
        if isinstance(upstream, dict) and upstream.get("api_key") is not None:
            upstream["api_key"] = REDACTED
    return data


def restore_redacted(data: dict[str, Any], current: Mapping[str, Any]) -> None:
    """Put back the current secret wherever the patch says "[REDACTED]".

    An upstream's key is matched by the upstream's name, never by position, so a
    kept key cannot end up on a different upstream; a "[REDACTED]" key on an
    upstream that does not exist yet is an error.
    """
    for section, key in SECTION_SECRETS.items():
        table = data.get(section)
        if isinstance(table, dict) and table.get(key) == REDACTED:
            table[key] = current[section][key]
    upstreams = data.get("upstreams")
    if not isinstance(upstreams, list):
        return
    old = {u["name"]: (u["api_key"], _url(u.get("base_url"))) for u in current.get("upstreams", [])}
    for i, upstream in enumerate(upstreams):
        if not isinstance(upstream, dict) or upstream.get("api_key") != REDACTED:
            continue
        name = upstream.get("name")
        param = f"upstreams[{i}].api_key"
        if name not in old:
            raise ConfigError(f"{param}: no upstream named '{name}' has a key to keep", param)
        key, base_url = old[name]
        if base_url != _url(upstream.get("base_url")):  # node.toml moved it since
            raise ConfigError(f"{param}: base_url is not the key's: type the key again", param)
        upstream["api_key"] = key


def kept_patch(
    patch: Mapping[str, Any],
    current: Mapping[str, Any],
    file: Mapping[str, Any],
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """The patch as it is to be remembered, with no secret leaving for a new address.

    A section's "[REDACTED]" secret is dropped (the current one stays). An upstream's
    "[REDACTED]" key is kept only for the same upstream at the same base_url (a kept key
    is never sent anywhere new: type it again). It is remembered as nothing when it is
    the one its `api_key_env` names, as "[REDACTED]" (read from node.toml at every
    start) when it is node.toml's own, and as the key only when it was typed in the
    panel. A key variable is named only with the base_url node.toml pairs it with, so
    the panel cannot send the node's environment elsewhere.
    """
    if not isinstance(patch, Mapping):
        raise ConfigError("settings must be an object", param=None)
    data = copy.deepcopy(dict(patch))
    for section, key in SECTION_SECRETS.items():
        table = data.get(section)
        if not isinstance(table, dict):
            continue
        if table.get(key) == REDACTED:
            del table[key]
        env_key = f"{key}_env"
        if env_key in table and table[env_key] != file.get(section, {}).get(env_key):
            param = f"{section}.{env_key}"
            raise ConfigError(f"{param}: a secret's variable is named in node.toml only", param)
    upstreams = data.get("upstreams")
    if not isinstance(upstreams, list):
        return data
    running = {u["name"]: u for u in current.get("upstreams", [])}
    in_file = {u["name"]: u for u in file.get("upstreams", [])}
    known_variables = {
        (u.get("api_key_env"), _url(u.get("base_url")))
        for u in in_file.values()
        if u.get("api_key_env")
    }
    for i, upstream in enumerate(upstreams):
        if not isinstance(upstream, dict):
            continue
        given, variable = upstream.get("api_key"), upstream.get("api_key_env")
        base_url = _url(upstream.get("base_url"))
        paired = isinstance(variable, str) and (variable, base_url) in known_variables
        if variable is not None and not paired:
            param = f"upstreams[{i}].api_key_env"
            raise ConfigError(
                f"{param}: a key variable is named in node.toml only (for this base_url)", param
            )
        if given != REDACTED:
            continue
        param = f"upstreams[{i}].api_key"
        old = running.get(upstream.get("name"))
        if old is None or old.get("api_key") is None:
            name = upstream.get("name")
            raise ConfigError(f"{param}: no upstream named '{name}' has a key to keep", param)
        if base_url != _url(old.get("base_url")):
            raise ConfigError(f"{param}: base_url changed: type the key again", param)
        origin = in_file.get(upstream.get("name"))
        if isinstance(variable, str) and environ.get(variable) == old["api_key"]:
            del upstream["api_key"]
        elif (
            origin is not None
            and origin.get("api_key") == old["api_key"]
            and _url(origin.get("base_url")) == base_url
        ):
            pass  # node.toml's key: stays "[REDACTED]", so editing node.toml still counts
        else:
            upstream["api_key"] = old["api_key"]
    return data


def _url(value: object) -> str | None:
    """A base_url as compared (no trailing slash); None for anything not text."""
    return value.rstrip("/") if isinstance(value, str) else None


def exact_default(value: object) -> object:
    """`json.dumps(..., default=exact_default)` for settings that are stored: a Decimal
    is kept as its exact text, which the settings models read back as the same Decimal."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_default(value: object) -> object:
    """`json.dumps(..., default=json_default)` for settings and prices.

    Decimals become numbers: int when integral, otherwise float. Use it only for
    display; money itself never goes through a float.
    """
    if isinstance(value, Decimal | Fraction):
        if value == int(value):
            return int(value)
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
