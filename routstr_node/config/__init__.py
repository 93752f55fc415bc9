"""The node's configuration: node.toml, environment overrides and admin changes."""

from routstr_node.config.errors import ConfigError
from routstr_node.config.loader import DEFAULT_PATH, load_settings
from routstr_node.config.models import (
    KNOWN_PRICE_SOURCES,
    AdminSection,
    LimitsSection,
    MintsSection,
    ModelConfig,
    NodeSection,
    NostrSection,
    PricingSection,
    Settings,
    UpstreamConfig,
)
from routstr_node.config.patch import REDACTED, json_default

__all__ = [
    "DEFAULT_PATH",
    "KNOWN_PRICE_SOURCES",
    "REDACTED",
    "AdminSection",
    "ConfigError",
    "LimitsSection",
    "MintsSection",
    "ModelConfig",
    "NodeSection",
    "NostrSection",
    "PricingSection",
    "Settings",
    "UpstreamConfig",
    "json_default",
    "load_settings",
]
