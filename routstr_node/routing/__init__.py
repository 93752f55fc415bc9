"""The provider choice: which of a model's providers a request goes to, in which order,
and what each provider's health and measured speed are (contract section 9)."""

from routstr_node.routing.board import DOWN_AFTER_FAILURES, ProviderBoard, ProviderStatus
from routstr_node.routing.choice import Candidate, Route, choose
from routstr_node.routing.errors import (
    InvalidProvider,
    ModelUnavailable,
    NoProviderAvailable,
    WrongCategory,
)
from routstr_node.routing.request import (
    NO_PREFERENCES,
    Preferences,
    Sort,
    Variant,
    find_model,
    parse_preferences,
    request_parameters,
    routing_of,
)

__all__ = [
    "DOWN_AFTER_FAILURES",
    "NO_PREFERENCES",
    "Candidate",
    "InvalidProvider",
    "ModelUnavailable",
    "NoProviderAvailable",
    "Preferences",
    "ProviderBoard",
    "ProviderStatus",
    "Route",
    "Sort",
    "Variant",
    "WrongCategory",
    "choose",
    "find_model",
    "parse_preferences",
    "request_parameters",
    "routing_of",
]
