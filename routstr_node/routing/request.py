"""What a request asks of the provider choice: the model's suffix and its `provider` object.

Both are read before any money moves, so a malformed one costs the client nothing and
leaves an X-Cashu token unspent.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from routstr_node.config import DataCollection, ModelCategory, ModelConfig, Settings
from routstr_node.routing.errors import InvalidProvider, ModelUnavailable, WrongCategory

E = TypeVar("E", bound=StrEnum)


class Variant(StrEnum):
    """A model id's suffix (``openai/gpt-4o:floor``)."""

    FLOOR = "floor"  # cheapest first
    NITRO = "nitro"  # fastest measured throughput first
    ONLINE = "online"  # providers that search the web themselves
    THINKING = "thinking"  # providers that think, with their thinking_params


class Sort(StrEnum):
    PRICE = "price"
    THROUGHPUT = "throughput"
    LATENCY = "latency"


@dataclass(frozen=True, slots=True)
class Preferences:
    """The request's `provider` object (OpenRouter's provider routing), checked."""

    order: tuple[str, ...] = ()
    only: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()
    allow_fallbacks: bool = True
    sort: Sort | None = None
    data_collection: DataCollection = DataCollection.ALLOW
    zdr: bool = False
    require_parameters: bool = False


NO_PREFERENCES = Preferences()

# what `require_parameters` does not count as a parameter: the request itself
_NOT_PARAMETERS = frozenset(
    {"model", "messages", "prompt", "input", "provider", "stream", "stream_options"}
)
_FIELDS = (
    "order",
    "only",
    "ignore",
    "allow_fallbacks",
    "sort",
    "data_collection",
    "zdr",
    "require_parameters",
)


def find_model(settings: Settings, requested: str) -> tuple[ModelConfig, Variant | None]:
    """The model a request names, and its suffix; ModelUnavailable if there is none.

    An id that is itself configured wins (a model may have ":" in its id).
    """
    model = settings.model(requested)
    if model is not None:
        return model, None
    base, colon, suffix = requested.rpartition(":")
    model = settings.model(base) if colon else None
    if model is None:
        raise ModelUnavailable(f"the model '{requested}' is not available here")
    try:
        variant = Variant(suffix)
    except ValueError:
        known = ", ".join(f":{v}" for v in Variant)
        raise ModelUnavailable(
            f"the model '{base}' has no variant ':{suffix}' (known: {known})"
        ) from None
    return model, variant


def routing_of(
    settings: Settings,
    requested: str,
    body: Mapping[str, Any],
    path: str,
    serves: Callable[[ModelCategory], bool],
) -> tuple[ModelConfig, Variant | None, Preferences]:
    """What a request on ``path`` asks of the provider choice: its model (one of a
    category the route ``serves``, else WrongCategory), suffix and `provider` object."""
    model, variant = find_model(settings, requested)
    if not serves(model.category):
        raise WrongCategory(f"'{model.id}' is a {model.category} model, not served on {path}")
    provider = body.get("provider")
    upstreams = [u.name for u in settings.upstreams]
    preferences = NO_PREFERENCES if provider is None else parse_preferences(provider, upstreams)
    return model, variant, preferences


def parse_preferences(value: Any, providers: Collection[str]) -> Preferences:
    """The `provider` object checked against the node's provider names (`providers`).

    Absent or null: no preferences. Each field may be null (unset). Names must be
    providers of this node; an `only` that allows none is refused rather than
    answered with no provider at all.
    """
    if value is None:
        return NO_PREFERENCES
    if not isinstance(value, Mapping):
        raise InvalidProvider("provider", "provider must be an object")
    for key in value:
        if key not in _FIELDS:
            raise InvalidProvider(
                f"provider.{key}",
                f"unknown field provider.{key} (known: {', '.join(_FIELDS)})",
            )
    only = _names(value, "only", providers)
    if only is not None and not only:
        raise InvalidProvider("provider.only", "provider.only lists no provider: none would do")
    sort = value.get("sort")
    data_collection = value.get("data_collection")
    return Preferences(
        order=_names(value, "order", providers) or (),
        only=frozenset(only) if only is not None else None,
        ignore=frozenset(_names(value, "ignore", providers) or ()),
        allow_fallbacks=_flag(value, "allow_fallbacks", default=True),
        sort=None if sort is None else _choice(Sort, sort, "sort"),
        data_collection=DataCollection.ALLOW
        if data_collection is None
        else _choice(DataCollection, data_collection, "data_collection"),
        zdr=_flag(value, "zdr", default=False),
        require_parameters=_flag(value, "require_parameters", default=False),
    )


def _names(
    value: Mapping[str, Any], key: str, providers: Collection[str]
) -> tuple[str, ...] | None:
    names = value.get(key)
    if names is None:
        return None
    param = f"provider.{key}"
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidProvider(param, f"{param} must be a list of provider names")
    for i, name in enumerate(names):
        if name not in providers:
            known = ", ".join(providers) or "none"
            raise InvalidProvider(param, f"{param}: no provider named '{name}' (known: {known})")
        if name in names[:i]:
            raise InvalidProvider(param, f"{param}: '{name}' is listed twice")
    return tuple(names)


def _flag(value: Mapping[str, Any], key: str, *, default: bool) -> bool:
    flag = value.get(key)
    if flag is None:
        return default
    if not isinstance(flag, bool):
        raise InvalidProvider(f"provider.{key}", f"provider.{key} must be true or false")
    return flag


def _choice(kind: type[E], given: Any, key: str) -> E:
    if isinstance(given, str):
        try:
            return kind(given)
        except ValueError:
            pass
    known = " | ".join(f'"{v}"' for v in kind)
    raise InvalidProvider(f"provider.{key}", f"provider.{key} must be {known}")


def request_parameters(body: Mapping[str, Any]) -> frozenset[str]:
    """The parameters a request sets, as `require_parameters` compares them."""
    return frozenset(k for k, v in body.items() if k not in _NOT_PARAMETERS and v is not None)
