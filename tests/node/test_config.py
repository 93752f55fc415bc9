"""node.toml loading, environment overrides, secrets, errors and the admin PATCH merge."""

# ruff: noqa: E501 (EXAMPLE_TOML is the contract's example as it is, comments included)

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from routstr_node.config import (
    REDACTED,
    ConfigError,
    DataCollection,
    ModelCategory,
    Settings,
    json_default,
    load_settings,
)
from routstr_node.demo.config import config_toml, demo_config

REPO = Path(__file__).resolve().parents[2]
VALID_NSEC = "nsec1qypqxpq9qcrsszg2pvxq6rs0zqg3yyc5z5tpwxqergd3c8g7rusqpqcc2y"
SHARED_EXAMPLE = Path("/work/shared/node.example.toml")

# A copy of the contract's node.example.toml, so the test stands without /work/shared.
EXAMPLE_TOML = """\
# routstr-node configuration: every key the node understands, with its default.
# Environment variables override the file: ROUTSTR_<SECTION>__<KEY>, e.g. ROUTSTR_NODE__PORT=9000.

[node]
name = "Example Node"
description = "Pay-per-request AI with Cashu ecash"
host = "127.0.0.1"
port = 8000
data_dir = "./data"            # SQLite database and the wallet seed live here: back it up
public_url = ""                # announced on Nostr and shown in /v1/info

[mints]
trusted = ["https://mint.example.com"]   # the first one is primary: change and withdrawals come from it

[pricing]
btc_usd = 100000.0             # fixed exchange rate; remove it to follow live price sources
price_sources = ["kraken", "coinbase"]
markup_percent = 0.0           # added on top of every model price
min_request_msat = 0

[[upstreams]]
name = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY" # or api_key = "..."
timeout_s = 300

[[upstreams]]
name = "openrouter"
base_url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_API_KEY"

[[upstreams]]
name = "videos"                # an upstream with OpenAI's asynchronous video jobs (/videos)
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
timeout_s = 600

[[models]]
id = "gpt-4o-mini"
upstream = "openai"
upstream_model = "gpt-4o-mini" # optional: the name the upstream knows it by
input_usd_per_1m = 0.15        # or input_sat_per_1m
output_usd_per_1m = 0.60       # or output_sat_per_1m
request_sat = 0                # optional flat price per request
context_length = 128000
max_output_tokens = 16384

# A model sold through several providers (CONTRACT.md section 9): list them instead of
# `upstream` and the prices. The first is the default; failover goes down the list.
[[models]]
id = "openai/gpt-4o"
display_name = "GPT-4o"
category = "chat"
capabilities = ["chat", "vision", "tools"]
context_length = 128000
max_output_tokens = 16384

  [[models.providers]]
  upstream = "openai"
  upstream_model = "gpt-4o"
  input_usd_per_1m = 2.5
  output_usd_per_1m = 10.0
  data_collection = "deny"
  zdr = false

  [[models.providers]]
  upstream = "openrouter"
  upstream_model = "openai/gpt-4o"
  input_usd_per_1m = 2.75
  output_usd_per_1m = 11.0
  thinking = false
  online = true

# Media models (section 10)
[[models]]
id = "gpt-image-1"
category = "image"
upstream = "openai"
image_usd = 0.04
image_usd_by_size = {"1024x1024" = 0.04, "1536x1024" = 0.06, "1024x1024/high" = 0.17}

[[models]]
id = "tts-1"
category = "speech"
upstream = "openai"
input_usd_per_1m_chars = 15.0

[[models]]
id = "whisper-1"
category = "transcription"
upstream = "openai"
audio_usd_per_minute = 0.006
max_audio_seconds = 1500

[[models]]
id = "veo-3.1-fast"
category = "video"
upstream = "videos"
video_usd_per_second_by_resolution = {"720p" = 0.15, "1080p" = 0.18}
default_video_seconds = 4

[admin]
password_env = "ROUTSTR_ADMIN_PASSWORD"  # unset: a password is generated at first start and printed once

[limits]
requests_per_minute = 60
requests_per_hour = 1000
requests_per_day = 10000
max_body_bytes = 10485760

[logs]
retention_days = 30            # usage records (per request) kept this long

[sessions]
enabled = false                # conversation sessions (session_id); the node then stores chats
ttl_hours = 24
max_messages = 50

[database]
url = ""                       # empty: SQLite in data_dir; "postgresql://user@host/db" for several processes

[nostr]
relays = []                    # e.g. ["wss://relay.damus.io"]
nsec_env = "ROUTSTR_NSEC"      # unset: a key is generated and kept in data_dir
announce = false

[payout]
lightning_address = ""         # e.g. "operator@wallet.example": earnings above min_sat are paid there
min_sat = 1000
interval_minutes = 60
"""

MINIMAL = '[mints]\ntrusted = ["https://mint.example.com"]\n'

UPSTREAM_AND_MODEL = """
[[upstreams]]
name = "up"
base_url = "http://127.0.0.1:8001/v1"

[[models]]
id = "m"
upstream = "up"
input_sat_per_1m = 100
context_length = 1000
max_output_tokens = 100
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in a temporary directory so errors say "node.toml: ..."."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load_text(text: str, environ: dict[str, str] | None = None) -> Settings:
    Path("node.toml").write_text(text)
    return load_settings(Path("node.toml"), environ or {})


def load_error(text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_text(text, environ)
    return caught.value


def check_example(settings: Settings) -> None:
    assert settings.node.name == "Example Node"
    assert settings.node.description == "Pay-per-request AI with Cashu ecash"
    assert (settings.node.host, settings.node.port) == ("127.0.0.1", 8000)
    assert settings.node.data_dir == Path("./data")
    assert settings.node.public_url == ""
    assert settings.mints.trusted == ["https://mint.example.com"]
    assert settings.mints.primary == "https://mint.example.com"
    assert settings.pricing.btc_usd == Decimal("100000.0")
    assert isinstance(settings.pricing.btc_usd, Decimal)
    assert settings.pricing.price_sources == ["kraken", "coinbase"]
    assert settings.pricing.markup_percent == 0
    assert isinstance(settings.pricing.markup_percent, Decimal)
    assert settings.pricing.min_request_msat == 0
    assert [u.name for u in settings.upstreams] == ["openai", "openrouter", "videos"]
    upstream = settings.upstream("openai")
    assert upstream.base_url == "https://api.openai.com/v1"
    assert upstream.api_key_env == "OPENAI_API_KEY"
    assert upstream.api_key == "sk-from-env"
    assert upstream.timeout_s == 300
    assert settings.upstream("openrouter").api_key is None  # OPENROUTER_API_KEY is unset
    assert settings.upstream("openrouter").timeout_s == 300
    assert settings.upstream("videos").timeout_s == 600
    ids = [m.id for m in settings.models]
    assert ids == [
        "gpt-4o-mini",
        "openai/gpt-4o",
        "gpt-image-1",
        "tts-1",
        "whisper-1",
        "veo-3.1-fast",
    ]
    model = settings.model("gpt-4o-mini")
    assert model is not None
    assert (model.id, model.upstream, model.upstream_model) == ("gpt-4o-mini", "openai", model.id)
    assert (model.display_name, model.category, model.capabilities) == (None, "chat", [])
    assert model.listed_name == model.id
    assert model.input_usd_per_1m == Decimal("0.15")
    assert model.output_usd_per_1m == Decimal("0.60")
    assert isinstance(model.input_usd_per_1m, Decimal)
    assert model.input_sat_per_1m is None and model.output_sat_per_1m is None
    assert model.request_sat == 0
    assert (model.context_length, model.max_output_tokens) == (128000, 16384)
    (offer,) = model.offers  # the one-provider form: one implicit provider
    assert (offer.upstream, offer.upstream_model) == ("openai", "gpt-4o-mini")
    assert offer.input_usd_per_1m == Decimal("0.15") and offer.request_sat == 0
    assert (offer.data_collection, offer.zdr, offer.online, offer.thinking) == (
        DataCollection.ALLOW,
        False,
        False,
        False,
    )
    assert offer.supported_parameters is None and offer.thinking_params == {}
    routed = settings.model("openai/gpt-4o")
    assert routed is not None
    assert (routed.display_name, routed.category) == ("GPT-4o", ModelCategory.CHAT)
    assert routed.capabilities == ["chat", "vision", "tools"]
    assert routed.upstream is None and routed.providers is not None
    first, second = routed.offers
    assert (first.upstream, first.upstream_model) == ("openai", "gpt-4o")
    assert (first.input_usd_per_1m, first.output_usd_per_1m) == (Decimal("2.5"), Decimal("10.0"))
    assert (first.data_collection, first.zdr, first.online) == ("deny", False, False)
    assert (second.upstream, second.upstream_model) == ("openrouter", "openai/gpt-4o")
    assert (second.input_usd_per_1m, second.output_usd_per_1m) == (
        Decimal("2.75"),
        Decimal("11.0"),
    )
    assert (second.data_collection, second.thinking, second.online) == ("allow", False, True)
    image = settings.model("gpt-image-1")
    assert image is not None and image.category == ModelCategory.IMAGE
    assert image.context_length is None and image.max_output_tokens is None
    assert image.image_usd == Decimal("0.04")
    assert image.image_usd_by_size == {
        "1024x1024": Decimal("0.04"),
        "1536x1024": Decimal("0.06"),
        "1024x1024/high": Decimal("0.17"),
    }
    speech = settings.model("tts-1")
    assert speech is not None and speech.category == ModelCategory.SPEECH
    assert speech.input_usd_per_1m_chars == Decimal("15.0")
    transcription = settings.model("whisper-1")
    assert transcription is not None and transcription.category == "transcription"
    assert transcription.audio_usd_per_minute == Decimal("0.006")
    assert transcription.max_audio_seconds == 1500
    video = settings.model("veo-3.1-fast")
    assert video is not None and video.category == ModelCategory.VIDEO
    assert video.upstream == "videos"
    assert video.video_usd_per_second_by_resolution == {
        "720p": Decimal("0.15"),
        "1080p": Decimal("0.18"),
    }
    assert video.default_video_seconds == 4
    assert settings.admin.password is None
    assert settings.admin.password_env == "ROUTSTR_ADMIN_PASSWORD"
    assert settings.limits.requests_per_minute == 60
    assert settings.limits.requests_per_hour == 1000
    assert settings.limits.requests_per_day == 10000
    assert settings.limits.max_body_bytes == 10485760
    assert settings.logs.retention_days == 30
    assert (settings.sessions.enabled, settings.sessions.ttl_hours) == (False, 24)
    assert settings.sessions.max_messages == 50
    assert settings.database.url == ""
    assert settings.nostr.relays == []
    assert settings.nostr.nsec is None
    assert settings.nostr.nsec_env == "ROUTSTR_NSEC"
    assert settings.nostr.announce is False
    assert settings.payout.lightning_address == ""
    assert (settings.payout.min_sat, settings.payout.interval_minutes) == (1000, 60)


# --- loading ---------------------------------------------------------------------------


def test_embedded_example_loads_exactly(in_tmp: Path) -> None:
    check_example(load_text(EXAMPLE_TOML, {"OPENAI_API_KEY": "sk-from-env"}))


@pytest.mark.skipif(not SHARED_EXAMPLE.exists(), reason="no shared example file")
def test_shared_example_file_loads_exactly() -> None:
    settings = load_settings(SHARED_EXAMPLE, {"OPENAI_API_KEY": "sk-from-env"})
    check_example(settings)


def test_defaults_are_the_example_values(in_tmp: Path) -> None:
    example = load_text(EXAMPLE_TOML)
    settings = load_text(MINIMAL)
    for section in ("node", "limits", "admin", "logs", "sessions", "database", "nostr", "payout"):
        assert getattr(settings, section) == getattr(example, section)
    assert settings.pricing.btc_usd is None  # removed: live price sources
    assert settings.pricing.price_sources == ["kraken", "coinbase"]
    assert settings.pricing.markup_percent == 0 and settings.pricing.min_request_msat == 0
    assert settings.upstreams == [] and settings.models == []


def test_repo_node_toml_loads() -> None:
    settings = load_settings(REPO / "node.toml", {})
    assert (settings.node.host, settings.node.port) == ("127.0.0.1", 8000)
    assert settings.mints.trusted == ["http://127.0.0.1:3338"]
    assert settings.pricing.btc_usd is not None
    assert settings.upstream("local").base_url == "http://127.0.0.1:8001/v1"
    assert settings.upstream("local").api_key == "sk-local-demo"
    assert any(m.input_usd_per_1m is not None for m in settings.models)
    assert any(m.input_sat_per_1m is not None for m in settings.models)
    assert settings.nostr.announce is False


def test_model_defaults_and_normalised_urls(in_tmp: Path) -> None:
    settings = load_text(
        '[mints]\ntrusted = ["http://a.example/", "https://b.example/mint/"]\n'
        '[node]\npublic_url = "https://node.example/"\n' + UPSTREAM_AND_MODEL
    )
    assert settings.mints.trusted == ["http://a.example", "https://b.example/mint"]
    assert settings.node.public_url == "https://node.example"
    model = settings.model("m")
    assert model is not None
    assert model.upstream_model == "m"
    assert model.output_usd_per_1m is None and model.output_sat_per_1m is None
    assert model.request_sat == 0
    assert settings.model("nope") is None


# --- environment overrides ---------------------------------------------------------------


def test_env_overrides(in_tmp: Path) -> None:
    settings = load_text(
        EXAMPLE_TOML,
        {
            "ROUTSTR_NODE__PORT": "9000",
            "ROUTSTR_PRICING__BTC_USD": "95000.5",
            "ROUTSTR_MINTS__TRUSTED": '["http://a", "http://b/"]',
            "ROUTSTR_NODE__HOST": "0.0.0.0",
            "ROUTSTR_NODE__NAME": "123",
            "ROUTSTR_NOSTR__ANNOUNCE": "true",
            "ROUTSTR_NOSTR__RELAYS": '["wss://relay.example"]',
            "ROUTSTR_LIMITS__REQUESTS_PER_MINUTE": "5",
            "ROUTSTR_ADMIN_PASSWORD": "not-an-override",
            "ROUTSTR_BASE_URL": "http://ignored",
            "HOME": "/root",
        },
    )
    assert settings.node.port == 9000
    assert settings.pricing.btc_usd == Decimal("95000.5")
    assert isinstance(settings.pricing.btc_usd, Decimal)
    assert settings.mints.trusted == ["http://a", "http://b"]
    assert settings.node.host == "0.0.0.0"
    assert settings.node.name == "123"  # a text key takes the raw text
    assert settings.nostr.announce is True
    assert settings.nostr.relays == ["wss://relay.example"]
    assert settings.limits.requests_per_minute == 5
    assert settings.limits.requests_per_hour == 1000


def test_env_override_section_and_key_are_case_insensitive(in_tmp: Path) -> None:
    settings = load_text(
        MINIMAL, {"ROUTSTR_Node__Port": "9001", "ROUTSTR_limits__max_BODY_bytes": "7"}
    )
    assert settings.node.port == 9001
    assert settings.limits.max_body_bytes == 7


def test_env_override_null_switches_to_live_rate(in_tmp: Path) -> None:
    settings = load_text(EXAMPLE_TOML, {"ROUTSTR_PRICING__BTC_USD": "null"})
    assert settings.pricing.btc_usd is None


def test_env_override_creates_missing_section(in_tmp: Path) -> None:
    settings = load_text(
        MINIMAL, {"ROUTSTR_NOSTR__NSEC": VALID_NSEC, "ROUTSTR_ADMIN__PASSWORD": "12"}
    )
    assert settings.nostr.nsec == VALID_NSEC
    assert settings.admin.password == "12"  # text, although it parses as JSON


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ROUTSTR_NODEE__PORT", "1", "ROUTSTR_NODEE__PORT: unknown key 'nodee.port'"),
        ("ROUTSTR_NODE__PROT", "1", "ROUTSTR_NODE__PROT: unknown key 'node.prot'"),
        ("ROUTSTR_NODE__PORT__X", "1", "ROUTSTR_NODE__PORT__X: unknown key 'node.port__x'"),
        (
            "ROUTSTR_NODE__PORT",
            "70000",
            "ROUTSTR_NODE__PORT: node.port: Input should be less than or equal to 65535",
        ),
        (
            "ROUTSTR_NODE__PORT",
            "abc",
            "ROUTSTR_NODE__PORT: node.port: Input should be a valid integer",
        ),
        (
            "ROUTSTR_MINTS__TRUSTED",
            '["ftp://x"]',
            "ROUTSTR_MINTS__TRUSTED: mints.trusted[0]: 'ftp://x' is not a http/https URL",
        ),
        (
            "ROUTSTR_PRICING__BTC_USD",
            "NaN",
            "ROUTSTR_PRICING__BTC_USD: pricing.btc_usd: Input should be a finite number",
        ),
    ],
)
def test_env_override_errors_name_the_variable(
    in_tmp: Path, variable: str, value: str, expected: str
) -> None:
    error = load_error(EXAMPLE_TOML, {variable: value})
    assert str(error).startswith(expected), str(error)


def test_env_override_of_a_list_section_is_refused(in_tmp: Path) -> None:
    error = load_error(EXAMPLE_TOML, {"ROUTSTR_UPSTREAMS__API_KEY": "x"})
    assert str(error).startswith(
        "ROUTSTR_UPSTREAMS__API_KEY: upstreams can only be set in the file"
    )


# --- secrets -----------------------------------------------------------------------------


def test_secrets_come_from_the_named_variables(in_tmp: Path) -> None:
    settings = load_text(
        EXAMPLE_TOML,
        {
            "OPENAI_API_KEY": "sk-env",
            "ROUTSTR_ADMIN_PASSWORD": "pw-env",
            "ROUTSTR_NSEC": VALID_NSEC,
        },
    )
    assert settings.upstreams[0].api_key == "sk-env"
    assert settings.admin.password == "pw-env"
    assert settings.nostr.nsec == VALID_NSEC


def test_a_direct_secret_wins_over_its_env(in_tmp: Path) -> None:
    text = EXAMPLE_TOML.replace(
        'api_key_env = "OPENAI_API_KEY"', 'api_key = "sk-file"\napi_key_env = "K"'
    )
    text = text.replace('password_env = "ROUTSTR_ADMIN_PASSWORD"', 'password = "pw-file"')
    settings = load_text(text, {"K": "sk-env", "ROUTSTR_ADMIN_PASSWORD": "pw-env"})
    assert settings.upstreams[0].api_key == "sk-file"
    assert settings.admin.password == "pw-file"
    overridden = load_text(text, {"ROUTSTR_ADMIN__PASSWORD": "pw-override"})
    assert overridden.admin.password == "pw-override"


def test_unset_or_empty_secret_variables_leave_the_secret_unset(in_tmp: Path) -> None:
    settings = load_text(EXAMPLE_TOML, {"OPENAI_API_KEY": "", "ROUTSTR_NSEC": ""})
    assert settings.upstreams[0].api_key is None
    assert settings.admin.password is None
    assert settings.nostr.nsec is None


def test_a_nostr_key_that_does_not_decode_stops_the_node(in_tmp: Path) -> None:
    with_hex = load_text(EXAMPLE_TOML, {"ROUTSTR_NSEC": "01" * 32})
    assert with_hex.nostr.nsec == "01" * 32
    in_file = load_error(MINIMAL + '[nostr]\nnsec = "garbage"\n')
    assert str(in_file) == "node.toml: nostr.nsec: must be an nsec1… key or 64 hex characters"
    assert in_file.param == "nostr.nsec"
    overridden = load_error(MINIMAL, {"ROUTSTR_NOSTR__NSEC": VALID_NSEC[:-1] + "x"})
    assert str(overridden) == "ROUTSTR_NOSTR__NSEC: nostr.nsec: not a valid nsec1… key"
    from_env = load_error(EXAMPLE_TOML, {"ROUTSTR_NSEC": "abcd"})
    assert str(from_env) == (
        "ROUTSTR_NSEC (nostr.nsec_env in node.toml): must be an nsec1… key or 64 hex characters"
    )
    # 32 bytes that are no secp256k1 key: zero, and the curve order itself
    order = "ffffffffffffffffffffffffffffffffbaaedce6af48a03bbfd25e8cd0364141"
    for unusable in ("00" * 32, order):
        error = load_error(MINIMAL + f'[nostr]\nnsec = "{unusable}"\n')
        assert error.param == "nostr.nsec"
        assert str(error).startswith("node.toml: nostr.nsec: is not a usable secp256k1 key")


def test_a_data_dir_that_is_a_file_stops_the_node(in_tmp: Path) -> None:
    (in_tmp / "taken").write_text("a file")
    text = MINIMAL.replace("[mints]", '[node]\ndata_dir = "taken"\n\n[mints]', 1)
    error = load_error(text)
    assert str(error) == "node.toml: node.data_dir: taken exists and is not a directory"
    assert error.param == "node.data_dir"


# --- errors ------------------------------------------------------------------------------

ERROR_CASES: list[tuple[str, str, str]] = [
    (
        MINIMAL + "[limits]\nrequests_per_minute = 0\n",
        "node.toml: limits.requests_per_minute: Input should be greater than 0",
        "limits.requests_per_minute",
    ),
    (MINIMAL + "[nodee]\nport = 1\n", "node.toml: unknown key 'nodee'", "nodee"),
    (MINIMAL + "[node]\nprot = 1\n", "node.toml: unknown key 'node.prot'", "node.prot"),
    (
        MINIMAL + "[node]\nport = 0\n",
        "node.toml: node.port: Input should be greater than or equal to 1",
        "node.port",
    ),
    (
        MINIMAL + "[node]\nport = 65536\n",
        "node.toml: node.port: Input should be less than or equal to 65535",
        "node.port",
    ),
    (
        MINIMAL + "[node]\nport = true\n",
        "node.toml: node.port: Input should be a valid integer",
        "node.port",
    ),
    (
        MINIMAL + '[node]\npublic_url = "node.example"\n',
        "node.toml: node.public_url: 'node.example' is not a http/https URL",
        "node.public_url",
    ),
    (
        MINIMAL + '[[upstreams]]\nname = "u"\nbase_url = "nope"\n',
        "node.toml: upstreams[0].base_url: 'nope' is not a http/https URL",
        "upstreams[0].base_url",
    ),
    (
        MINIMAL + '[[upstreams]]\nname = "u"\nbase_url = "http://x"\nkey = "k"\n',
        "node.toml: unknown key 'upstreams[0].key'",
        "upstreams[0].key",
    ),
    (
        MINIMAL + '[[upstreams]]\nname = "u"\nbase_url = "http://x"\napi_key = ""\n',
        "node.toml: upstreams[0].api_key: String should have at least 1 character",
        "upstreams[0].api_key",
    ),
    (
        MINIMAL + '[[upstreams]]\nname = "u"\nbase_url = "http://x"\n'
        '[[upstreams]]\nname = "u"\nbase_url = "http://y"\n',
        "node.toml: upstreams[1].name: duplicate upstream 'u'",
        "upstreams[1].name",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL.replace('upstream = "up"', 'upstream = "other"'),
        "node.toml: models[0].upstream: no upstream named 'other'",
        "models[0].upstream",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL + '[[models]]\nid = "m"\nupstream = "up"\n'
        "context_length = 10\nmax_output_tokens = 1\n",
        "node.toml: models[1].id: duplicate model 'm'",
        "models[1].id",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL + "input_usd_per_1m = 1\n",
        "node.toml: models[0].input_sat_per_1m: "
        "give input_usd_per_1m or input_sat_per_1m, not both",
        "models[0].input_sat_per_1m",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL + "output_sat_per_1m = -1\n",
        "node.toml: models[0].output_sat_per_1m: Input should be greater than or equal to 0",
        "models[0].output_sat_per_1m",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL + "output_usd_per_1m = nan\n",
        "node.toml: models[0].output_usd_per_1m: Input should be a finite number",
        "models[0].output_usd_per_1m",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL.replace("max_output_tokens = 100", "max_output_tokens = 2000"),
        "node.toml: models[0].max_output_tokens: is larger than context_length",
        "models[0].max_output_tokens",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL.replace("context_length = 1000\n", ""),
        "node.toml: models[0].context_length: Field required (a chat model)",
        "models[0].context_length",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL + "request_sat = 1.5\n",
        "node.toml: models[0].request_sat: Input should be a valid integer",
        "models[0].request_sat",
    ),
    *[
        (
            MINIMAL
            + UPSTREAM_AND_MODEL.replace('upstream = "up"\n', "").replace(
                "input_sat_per_1m = 100\n", ""
            )
            + tail,
            expected,
            param,
        )
        for tail, expected, param in [
            (
                '[[models.providers]]\nupstream = "up"\n[[models.providers]]\nupstream = "x"\n',
                "node.toml: models[0].providers[1].upstream: no upstream named 'x'",
                "models[0].providers[1].upstream",
            ),
            (
                '[[models.providers]]\nupstream = "up"\n[[models.providers]]\nupstream = "up"\n',
                "node.toml: models[0].providers[1].upstream: upstream 'up' is listed twice",
                "models[0].providers[1].upstream",
            ),
            (
                # a price on the model itself: the two forms mixed
                'input_sat_per_1m = 1\n[[models.providers]]\nupstream = "up"\n',
                "node.toml: models[0].input_sat_per_1m: belongs in each [[models.providers]]"
                " table of a model that lists them",
                "models[0].input_sat_per_1m",
            ),
            (
                "providers = []\n",
                "node.toml: models[0].providers: lists no provider",
                "models[0].providers",
            ),
            (
                "",
                "node.toml: models[0].upstream: Field required (or list [[models.providers]])",
                "models[0].upstream",
            ),
            (
                '[[models.providers]]\nupstream = "up"\nzdr = "yes"\n',
                "node.toml: models[0].providers[0].zdr: Input should be a valid boolean",
                "models[0].providers[0].zdr",
            ),
            (
                '[[models.providers]]\nupstream = "up"\ndata_collection = "never"\n',
                "node.toml: models[0].providers[0].data_collection: Input should be 'allow' or"
                " 'deny'",
                "models[0].providers[0].data_collection",
            ),
            (
                '[[models.providers]]\nupstream = "up"\nquantization = "fp8"\n',
                "node.toml: unknown key 'models[0].providers[0].quantization'",
                "models[0].providers[0].quantization",
            ),
        ]
    ],
    (
        MINIMAL + UPSTREAM_AND_MODEL + 'category = "music"\n',
        "node.toml: models[0].category: Input should be 'chat', 'embedding', 'image', 'speech',"
        " 'transcription' or 'video'",
        "models[0].category",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL + "thinking_params = {stream = false}\n",
        "node.toml: models[0].thinking_params.stream: 'stream' is the request's own, not a"
        " thinking parameter",
        "models[0].thinking_params.stream",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL + "image_sat = 1\nimage_usd = 0.01\n",
        "node.toml: models[0].image_sat: give image_usd or image_sat, not both",
        "models[0].image_sat",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL + 'image_sat_by_size = {"big" = 3}\n',
        "node.toml: models[0].image_sat_by_size.big: 'big' is not a key like \"1024x1024\" or"
        ' "1024x1024/hd"',
        "models[0].image_sat_by_size.big",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL + 'video_usd_per_second_by_resolution = {"720" = 0.1}\n',
        "node.toml: models[0].video_usd_per_second_by_resolution.720: '720' is not a key like"
        ' "720p" or "4K"',
        "models[0].video_usd_per_second_by_resolution.720",
    ),
    (
        MINIMAL + UPSTREAM_AND_MODEL + "audio_sat_per_minute = -1\n",
        "node.toml: models[0].audio_sat_per_minute: Input should be greater than or equal to 0",
        "models[0].audio_sat_per_minute",
    ),
    (
        MINIMAL
        + UPSTREAM_AND_MODEL.replace("context_length = 1000\n", "")
        + 'category = "embedding"\n',
        "node.toml: models[0].context_length: Field required (a embedding model)",
        "models[0].context_length",
    ),
    (
        MINIMAL + '[database]\nurl = "mysql://u@h/db"\n',
        "node.toml: database.url: must be empty (SQLite in data_dir) or a postgresql:// URL",
        "database.url",
    ),
    (
        MINIMAL + '[payout]\nlightning_address = "http://wallet.example/lnurl"\n',
        "node.toml: payout.lightning_address: 'http://wallet.example/lnurl' is not a Lightning"
        " address (name@domain) or an LNURL-pay https URL",
        "payout.lightning_address",
    ),
    (
        MINIMAL + "[logs]\nretention_days = 0\n",
        "node.toml: logs.retention_days: Input should be greater than 0",
        "logs.retention_days",
    ),
    (
        MINIMAL + "[sessions]\nttl = 1\n",
        "node.toml: unknown key 'sessions.ttl'",
        "sessions.ttl",
    ),
    ("[node]\nport = 1\n", "node.toml: mints: Field required", "mints"),
    (
        "[mints]\ntrusted = []\n",
        "node.toml: mints.trusted: List should have at least 1 item after validation, not 0",
        "mints.trusted",
    ),
    (
        '[mints]\ntrusted = ["mint.example.com"]\n',
        "node.toml: mints.trusted[0]: 'mint.example.com' is not a http/https URL",
        "mints.trusted[0]",
    ),
    (
        '[mints]\ntrusted = ["http://a", "http://a/"]\n',
        "node.toml: mints.trusted[1]: 'http://a' is listed twice",
        "mints.trusted[1]",
    ),
    (
        MINIMAL + "[pricing]\nbtc_usd = 0\n",
        "node.toml: pricing.btc_usd: Input should be greater than or equal to 1",
        "pricing.btc_usd",
    ),
    (
        MINIMAL + "[pricing]\nmarkup_percent = -1.5\n",
        "node.toml: pricing.markup_percent: Input should be greater than or equal to 0",
        "pricing.markup_percent",
    ),
    (
        MINIMAL + '[pricing]\nprice_sources = ["bitstamp"]\n',
        "node.toml: pricing.price_sources[0]: "
        "unknown price source 'bitstamp' (known: kraken, coinbase)",
        "pricing.price_sources[0]",
    ),
    (
        MINIMAL + "[pricing]\nprice_sources = []\n",
        "node.toml: pricing.price_sources: needs a source when btc_usd is not set",
        "pricing.price_sources",
    ),
    (
        MINIMAL + '[nostr]\nrelays = ["https://relay"]\n',
        "node.toml: nostr.relays[0]: 'https://relay' is not a ws/wss URL",
        "nostr.relays[0]",
    ),
    (
        MINIMAL + '[nostr]\nannounce = "yes"\n',
        "node.toml: nostr.announce: Input should be a valid boolean",
        "nostr.announce",
    ),
]


@pytest.mark.parametrize(("text", "expected", "param"), ERROR_CASES)
def test_errors_name_the_file_and_the_key(
    in_tmp: Path, text: str, expected: str, param: str
) -> None:
    error = load_error(text)
    assert str(error).splitlines()[0] == expected
    assert error.param == param


def test_every_problem_is_reported(in_tmp: Path) -> None:
    error = load_error(MINIMAL + "[limits]\nrequests_per_minute = 0\nrequests_per_day = -1\n")
    assert str(error).splitlines() == [
        "node.toml: limits.requests_per_minute: Input should be greater than 0",
        "node.toml: limits.requests_per_day: Input should be greater than 0",
    ]


def test_toml_syntax_error_names_file_and_line(in_tmp: Path) -> None:
    error = load_error('[node]\nname = "x"\nport = \n')
    assert str(error).startswith("node.toml: line 3: ")


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert str(caught.value) == f"{path}: file not found"


def test_binary_file_is_an_error(in_tmp: Path) -> None:
    Path("node.toml").write_bytes(b"\xff\xfe[node]")
    with pytest.raises(ConfigError) as caught:
        load_settings(Path("node.toml"), {})
    assert str(caught.value) == "node.toml: not UTF-8 text"


# --- admin: redacted view and PATCH --------------------------------------------------------

SECRET_TOML = (
    EXAMPLE_TOML.replace(
        'api_key_env = "OPENAI_API_KEY" # or api_key = "..."', 'api_key = "sk-openai"'
    )
    + '\n[[upstreams]]\nname = "local"\nbase_url = "http://127.0.0.1:8001/v1"\n'
)


@pytest.fixture
def secret_settings(in_tmp: Path) -> Settings:
    return load_text(SECRET_TOML, {"ROUTSTR_ADMIN_PASSWORD": "pw", "ROUTSTR_NSEC": VALID_NSEC})


def test_redacted_hides_every_secret(secret_settings: Settings) -> None:
    shown = secret_settings.redacted()
    assert list(shown) == [
        "node",
        "mints",
        "pricing",
        "upstreams",
        "models",
        "admin",
        "limits",
        "logs",
        "sessions",
        "database",
        "nostr",
        "payout",
    ]
    assert shown["upstreams"][0]["api_key"] == REDACTED
    assert shown["upstreams"][1]["api_key"] is None  # unset stays visible as unset
    assert shown["admin"]["password"] == REDACTED
    assert shown["nostr"]["nsec"] == REDACTED
    text = json.dumps(shown, default=json_default)
    for secret in ("sk-openai", '"pw"', VALID_NSEC):
        assert secret not in text
    assert json.loads(text)["pricing"]["btc_usd"] == 100000
    assert json.loads(text)["models"][0]["input_usd_per_1m"] == 0.15
    assert shown["pricing"]["btc_usd"] == Decimal("100000.0")  # the Decimal itself is kept
    assert secret_settings.upstreams[0].api_key == "sk-openai"  # the settings are untouched


def test_redacted_round_trips_through_patch(secret_settings: Settings) -> None:
    shown = json.loads(json.dumps(secret_settings.redacted(), default=str), parse_float=Decimal)
    assert secret_settings.merged(shown, {}) == secret_settings


def test_patch_merges_sections_key_by_key(secret_settings: Settings) -> None:
    new = secret_settings.merged({"limits": {"requests_per_minute": 5}, "node": {"port": 9000}}, {})
    assert new.limits.requests_per_minute == 5
    assert new.limits.requests_per_hour == 1000
    assert new.node.port == 9000
    assert new.node.name == "Example Node"
    assert new.upstreams == secret_settings.upstreams
    assert secret_settings.limits.requests_per_minute == 60  # the original is untouched


def test_patch_replaces_lists_whole(secret_settings: Settings) -> None:
    new = secret_settings.merged(
        {"mints": {"trusted": ["http://b"]}, "models": [], "nostr": {"relays": ["wss://r"]}}, {}
    )
    assert new.mints.trusted == ["http://b"]
    assert new.models == []
    assert new.nostr.relays == ["wss://r"]
    assert len(new.upstreams) == 4


def test_patch_redacted_keeps_secrets(secret_settings: Settings) -> None:
    shown = secret_settings.redacted()
    upstreams = list(reversed(shown["upstreams"]))  # matched by name, not position
    upstreams[-1]["timeout_s"] = 12
    new = secret_settings.merged(
        {
            "upstreams": upstreams,
            "admin": {"password": REDACTED},
            "nostr": {"nsec": REDACTED, "announce": True},
        },
        {},
    )
    assert [u.name for u in new.upstreams] == ["local", "videos", "openrouter", "openai"]
    assert new.upstream("openai").api_key == "sk-openai"
    assert new.upstream("openai").timeout_s == 12
    assert new.upstream("local").api_key is None
    assert new.admin.password == "pw"
    assert new.nostr.nsec == VALID_NSEC
    assert new.nostr.announce is True


def test_a_kept_key_never_follows_its_upstream_to_a_new_base_url(
    secret_settings: Settings,
) -> None:
    upstreams = secret_settings.redacted()["upstreams"]
    upstreams[0]["base_url"] = "https://api.example.org/v1"
    with pytest.raises(ConfigError) as refused:
        secret_settings.merged({"upstreams": upstreams}, {})
    assert refused.value.param == "upstreams[0].api_key"


def test_patch_can_change_and_clear_secrets(secret_settings: Settings) -> None:
    new = secret_settings.merged({"admin": {"password": "new-pw"}, "nostr": {"nsec": None}}, {})
    assert new.admin.password == "new-pw"
    assert new.nostr.nsec is None


def test_patch_redacted_key_on_an_unknown_upstream_is_refused(secret_settings: Settings) -> None:
    upstream = {"name": "new", "base_url": "http://new", "api_key": REDACTED}
    with pytest.raises(ConfigError) as caught:
        secret_settings.merged({"upstreams": [upstream], "models": []}, {})
    assert caught.value.param == "upstreams[0].api_key"


def test_patch_new_upstream_reads_its_env_key(secret_settings: Settings) -> None:
    upstream = {"name": "new", "base_url": "http://new", "api_key_env": "NEW_KEY"}
    new = secret_settings.merged({"upstreams": [upstream], "models": []}, {"NEW_KEY": "sk-new"})
    assert new.upstream("new").api_key == "sk-new"


def test_patch_switches_to_live_rate(secret_settings: Settings) -> None:
    assert secret_settings.merged({"pricing": {"btc_usd": None}}, {}).pricing.btc_usd is None


@pytest.mark.parametrize(
    ("patch", "param", "message"),
    [
        (
            {"limits": {"requests_per_minute": 0}},
            "limits.requests_per_minute",
            "limits.requests_per_minute: Input should be greater than 0",
        ),
        ({"nodee": {}}, "nodee", "unknown key 'nodee'"),
        ({"node": {"prot": 1}}, "node.prot", "unknown key 'node.prot'"),
        ({"limits": 5}, "limits", "limits: Input should be a valid dictionary"),
        (
            {
                "models": [
                    {"id": "x", "upstream": "nope", "context_length": 9, "max_output_tokens": 1}
                ]
            },
            "models[0].upstream",
            "models[0].upstream: no upstream named 'nope'",
        ),
        (
            {"pricing": {"btc_usd": 1.5, "markup_percent": "-1"}},
            "pricing.markup_percent",
            "pricing.markup_percent: Input should be greater than or equal to 0",
        ),
    ],
)
def test_patch_errors_name_the_field(
    secret_settings: Settings, patch: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        secret_settings.merged(patch, {})
    assert caught.value.param == param
    assert str(caught.value).startswith(message)


def test_json_default() -> None:
    assert json_default(Decimal("100000.0")) == 100000
    assert isinstance(json_default(Decimal("100000.0")), int)
    assert json_default(Decimal("0.15")) == 0.15
    assert json_default(Path("./data")) == "data"
    with pytest.raises(TypeError):
        json_default(object())


def test_the_demo_writes_the_config_it_runs_on(tmp_path: Path) -> None:
    """The demo's node.toml loads as the very settings the demo serves with."""
    config = demo_config(tmp_path / "node", 8123, "http://127.0.0.1:3338", "http://127.0.0.1:9/v1")
    path = tmp_path / "node.toml"
    path.write_text(config_toml(config))
    assert load_settings(path, environ={}) == Settings.model_validate(config)


# --- models sold through several providers, media prices, features not built yet -----------

ROUTED = """
[[upstreams]]
name = "a"
base_url = "http://127.0.0.1:8001/v1"
[[upstreams]]
name = "b"
base_url = "http://127.0.0.1:8002/v1"

[[models]]
id = "m"
context_length = 1000
max_output_tokens = 100
  [[models.providers]]
  upstream = "a"
  input_sat_per_1m = 100
  supported_parameters = ["temperature"]
  [[models.providers]]
  upstream = "b"
  upstream_model = "b-name"
  output_usd_per_1m = 1.25
  zdr = true
  thinking = true
  thinking_params = {reasoning_effort = "high", temperature = 0.7, top_k = 40.0, x = {on = true}}
"""


def test_providers_default_to_the_model_id_and_keep_their_own_keys(in_tmp: Path) -> None:
    settings = load_text(MINIMAL + ROUTED)
    model = settings.model("m")
    assert model is not None and model.display_name is None and model.listed_name == "m"
    a, b = model.offers
    assert (a.upstream, a.upstream_model, a.input_sat_per_1m) == ("a", "m", Decimal(100))
    assert a.supported_parameters == ["temperature"] and not a.uses_usd
    assert (b.upstream_model, b.zdr, b.thinking, b.uses_usd) == ("b-name", True, True, True)
    assert model.uses_usd
    # request parameters, not amounts: forwarded as JSON numbers
    assert b.thinking_params == {
        "reasoning_effort": "high",
        "temperature": 0.7,
        "top_k": 40,
        "x": {"on": True},
    }
    assert type(b.thinking_params["top_k"]) is int
    assert model.offer("b") is b and model.offer("c") is None


def test_a_routed_model_round_trips_through_the_admin_view(in_tmp: Path) -> None:
    settings = load_text(MINIMAL + ROUTED)
    shown = json.loads(json.dumps(settings.redacted(), default=str), parse_float=Decimal)
    assert shown["models"][0]["upstream"] is None
    assert [p["upstream"] for p in shown["models"][0]["providers"]] == ["a", "b"]
    assert settings.merged(shown, {}) == settings
    swapped = {**shown["models"][0], "providers": shown["models"][0]["providers"][::-1]}
    assert [o.upstream for o in settings.merged({"models": [swapped]}, {}).models[0].offers] == [
        "b",
        "a",
    ]


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        (
            {
                "models": [
                    {"id": "x", "category": "embedding", "context_length": 9, "providers": []}
                ]
            },
            "models[0].providers",
        ),
        (
            {
                "models": [
                    {
                        "id": "x",
                        "category": "embedding",
                        "context_length": 9,
                        "providers": [{"upstream": "nope"}],
                    }
                ]
            },
            "models[0].providers[0].upstream",
        ),
        ({"sessions": {"enabled": "yes"}}, "sessions.enabled"),
        ({"database": {"url": "mysql://u:pw@db/x"}}, "database.url"),
        ({"payout": {"lightning_address": "not an address"}}, "payout.lightning_address"),
    ],
)
def test_patch_errors_of_the_new_keys_name_the_field(
    secret_settings: Settings, patch: dict[str, Any], param: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        secret_settings.merged(patch, {})
    assert caught.value.param == param


def test_a_database_url_comes_from_its_variable(in_tmp: Path) -> None:
    text = MINIMAL + '[database]\nurl_env = "DB_URL"\n'
    assert load_text(text, {}).database.url == ""
    assert load_text(text, {"DB_URL": "postgresql://u:pw@db/x"}).database.url == (
        "postgresql://u:pw@db/x"
    )
    error = load_error(text, {"DB_URL": "mysql://u:pw@db/x"})
    assert str(error) == (
        "DB_URL (database.url_env in node.toml): database.url: must be empty (SQLite in"
        " data_dir) or a postgresql:// URL"
    )
    assert error.param == "database.url"
    overridden = load_error(MINIMAL, {"ROUTSTR_SESSIONS__ENABLED": "maybe"})
    assert str(overridden).startswith("ROUTSTR_SESSIONS__ENABLED: sessions.enabled: ")
    assert load_text(MINIMAL, {"ROUTSTR_SESSIONS__ENABLED": "true"}).sessions.enabled


def test_a_database_url_is_a_secret() -> None:
    from routstr_node.config.patch import redact

    shown = redact({"database": {"url": "postgresql://u:pw@db/x"}})
    assert shown["database"]["url"] == REDACTED
    assert redact({"database": {"url": ""}})["database"]["url"] == ""
