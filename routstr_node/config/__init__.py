"""The node's configuration: node.toml, environment overrides and admin changes."""

from routstr_node.config.catalog import (
    DataCollection,
    ModelCategory,
    ModelConfig,
    ProviderConfig,
)
from routstr_node.config.errors import ConfigError
from routstr_node.config.loader import DEFAULT_PATH, load_settings
from routstr_node.config.models import (
    KNOWN_PRICE_SOURCES,
    AdminSection,
    DatabaseSection,
    LimitsSection,
    LogsSection,
    MintsSection,
    NodeSection,
    NostrSection,
    PayoutSection,
    PricingSection,
    SessionsSection,
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
    "DataCollection",
    "DatabaseSection",
    "LimitsSection",
    "LogsSection",
    "MintsSection",
    "ModelCategory",
    "ModelConfig",
    "NodeSection",
    "NostrSection",
    "PayoutSection",
    "PricingSection",
    "ProviderConfig",
    "SessionsSection",
    "Settings",
    "UpstreamConfig",
    "json_default",
    "load_settings",
]
