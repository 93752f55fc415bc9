"""Why a request found no provider: typed here, answered in routstr_node.errors."""

from __future__ import annotations

from collections.abc import Mapping


class ModelUnavailable(Exception):
    """No such model here, an unknown suffix, or no provider serves the suffix (404)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WrongCategory(Exception):
    """The model is of a category another route serves (400 model_wrong_category)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidProvider(Exception):
    """The request's `provider` object is malformed (400); `param` names the field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class NoProviderAvailable(Exception):
    """The request's own filters left no candidate (404); says which filter took which."""

    def __init__(self, model_id: str, excluded: Mapping[str, str]) -> None:
        by_filter: dict[str, list[str]] = {}
        for name, reason in excluded.items():
            by_filter.setdefault(reason, []).append(name)
        why = "; ".join(
            f"{reason} excluded {', '.join(names)}" for reason, names in by_filter.items()
        )
        self.message = f"no provider of '{model_id}' is left for this request: {why}"
        self.filters = tuple(by_filter)
        super().__init__(self.message)
