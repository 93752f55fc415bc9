"""Media prices and costs (contract section 10): exact, by hand and property-based.

Reservation and charge per route as pure functions: images returned × the price for
their size and quality, characters of the input, started seconds of audio (never above
the reservation), seconds of video × the rate for the resolution.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routstr_node.config import ModelConfig, PricingSection
from routstr_node.errors import ApiError, from_domain
from routstr_node.media import UnsupportedSize, resolution, started_seconds
from routstr_node.media.costs import image_rate, units_cost, video_rate
from routstr_node.media.requests import (
    DEFAULT_VIDEO_SECONDS,
    ImageRequest,
    SpeechRequest,
    TranscriptionRequest,
    VideoRequest,
    seconds_of,
)
from routstr_node.pricing import Cost, ModelPrice

BTC_USD = Decimal(100000)


def price_of(category: str, pricing: PricingSection | None = None, **prices: Any) -> ModelPrice:
    config = ModelConfig(id="m", upstream="up", category=category, **prices)
    pricing = pricing or PricingSection(btc_usd=BTC_USD)
    return ModelPrice.from_config(config, pricing, pricing.btc_usd)


IMAGES = price_of(
    "image",
    image_sat=Decimal(30),
    image_sat_by_size={"1024x1024": Decimal(40), "1024x1024/hd": Decimal(80)},
)


def test_image_price_size_quality_wins_over_size_over_image_sat() -> None:
    rates = IMAGES.media
    assert image_rate(rates, "1024x1024", "hd") == 80_000
    assert image_rate(rates, "1024x1024", "standard") == 40_000  # no such key: the size's
    assert image_rate(rates, "1024x1024", None) == 40_000
    assert image_rate(rates, "512x512", None) == 30_000  # no such size: image_sat
    assert image_rate(rates, None, None) == 80_000  # the upstream chooses: the dearest


def test_an_unpriced_size_is_unsupported_when_there_is_no_plain_price() -> None:
    only_sizes = price_of("image", image_sat_by_size={"1024x1024": Decimal(40)})
    with pytest.raises(UnsupportedSize) as raised:
        image_rate(only_sizes.media, "256x256", None)
    error = from_domain(raised.value)
    assert isinstance(error, ApiError)
    assert (error.status, error.code, error.param) == (400, "unsupported_size", "size")
    assert "1024x1024" in error.message


def test_image_request_reserves_n_and_charges_images_returned() -> None:
    request = ImageRequest.read({"prompt": "a cat", "n": 3, "size": "1024x1024", "quality": "hd"})
    assert request.most_msat(IMAGES) == 3 * 80_000
    assert request.cost(IMAGES, 2, None, None) == Cost(0, 160_000, 0)
    # no size asked: the answer's size prices it, else the dearest
    auto = ImageRequest.read({"prompt": "a cat", "size": "auto"})
    assert auto.size is None and auto.most_msat(IMAGES) == 80_000
    assert auto.cost(IMAGES, 1, "1024x1024", None).total_msat == 40_000
    assert auto.cost(IMAGES, 1, "9x9", None).total_msat == 30_000
    assert auto.cost(IMAGES, 1, None, None).total_msat == 80_000


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "prompt_required", "prompt"),
        ({"prompt": "  "}, "prompt_required", "prompt"),
        ({"prompt": 3}, "prompt_required", "prompt"),
        ({"prompt": "x", "n": 0}, "invalid_n", "n"),
        ({"prompt": "x", "n": 11}, "invalid_n", "n"),
        ({"prompt": "x", "n": True}, "invalid_n", "n"),
        ({"prompt": "x", "size": 1024}, "invalid_size", "size"),
    ],
)
def test_image_request_errors(body: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(ApiError) as raised:
        ImageRequest.read(body)
    assert (raised.value.status, raised.value.code, raised.value.param) == (400, code, param)


def test_usd_prices_and_markup_apply_to_media_as_to_tokens() -> None:
    marked_up = PricingSection(btc_usd=BTC_USD, markup_percent=Decimal(10))
    price = price_of(
        "image",
        marked_up,
        image_usd=Decimal("0.04"),
        image_usd_by_size={"1024x1024/high": Decimal("0.17")},
        request_sat=2,
    )
    # $0.04 at $100k/BTC = 40 sat = 40,000 msat, +10 %
    assert price.media.image_msat == 44_000
    assert price.media.image_msat_by_size == {"1024x1024/high": 187_000}
    assert price.request_msat == 2_200
    assert units_cost(price, Fraction(44_000), 2, is_input=False) == Cost(0, 88_000, 2_200)


def test_speech_charges_the_characters_of_the_input() -> None:
    price = price_of("speech", input_sat_per_1m_chars=Decimal(15_000))  # 15 msat a char
    request = SpeechRequest.read({"input": "héllo wörld", "voice": "alloy"})
    assert request.chars == 11
    assert request.most_msat(price) == request.cost(price).total_msat == 165
    with pytest.raises(ApiError) as raised:
        SpeechRequest.read({"input": ""})
    assert raised.value.code == "input_required"


AUDIO = price_of("transcription", audio_sat_per_minute=Decimal(6))  # 100 msat a second


def test_transcription_bills_started_seconds_capped_by_the_reservation() -> None:
    request = TranscriptionRequest(measured=Fraction(9, 2), max_seconds=1500)
    assert request.reserved_seconds == 5
    assert request.most_msat(AUDIO) == 500
    assert request.seconds(None) == 5  # the measured duration
    assert request.seconds(Fraction(21, 10)) == 3  # reported wins: 2.1 s is 3 s
    assert request.seconds(Fraction(60)) == 5  # never above the reservation
    unreadable = TranscriptionRequest(measured=None, max_seconds=1500)
    assert unreadable.most_msat(AUDIO) == 150_000
    assert unreadable.seconds(Fraction(7)) == 7
    assert unreadable.seconds(None) == 1500  # neither: the reservation (never free)


@given(
    measured=st.none() | st.fractions(min_value=0, max_value=10_000),
    reported=st.none() | st.fractions(min_value=0, max_value=20_000),
    per_minute=st.decimals(min_value=0, max_value=10**6, places=3),
)
def test_transcription_charge_is_exact_and_within_the_reservation(
    measured: Fraction | None, reported: Fraction | None, per_minute: Decimal
) -> None:
    price = price_of("transcription", audio_sat_per_minute=per_minute)
    request = TranscriptionRequest(measured=measured, max_seconds=1500)
    seconds = request.seconds(reported)
    expected = reported if reported is not None else measured
    if expected is not None:
        assert seconds == min(math.ceil(expected), request.reserved_seconds)
    cost = request.cost(price, seconds).total_msat
    assert cost == math.ceil(seconds * Fraction(per_minute) * 1000 / 60)
    assert cost <= request.most_msat(price)


@pytest.mark.parametrize(
    ("size", "name"),
    [
        ("1280x720", "720p"),
        ("720x1280", "720p"),
        ("720p", "720p"),
        ("1080P", "1080p"),
        ("4K", "2160p"),
        ("3840x2160", "2160p"),
        ("16K", "16K"),
        ("big", None),
        ("0x720", None),
    ],
)
def test_video_sizes_are_resolutions_of_the_shorter_side(size: str, name: str | None) -> None:
    assert resolution(size) == name


VIDEO = price_of(
    "video",
    video_sat_per_second_by_resolution={"720p": Decimal(8), "4K": Decimal(20)},
)


def test_video_rate_by_resolution() -> None:
    rates = VIDEO.media
    assert video_rate(rates, "720p") == 8_000
    assert video_rate(rates, "2160p") == 20_000  # priced as "4K"
    assert video_rate(rates, None) == 20_000  # the upstream chooses: the dearest
    with pytest.raises(UnsupportedSize):
        video_rate(rates, "1080p")
    plain = price_of(
        "video",
        video_sat_per_second=Decimal(5),
        video_sat_per_second_by_resolution={"720p": Decimal(8)},
    )
    assert video_rate(plain.media, "1080p") == 5_000  # no key of its own: the plain rate


def test_video_request_reserves_duration_and_charges_what_came_back() -> None:
    request = VideoRequest.read({"prompt": "waves", "duration": 4.5, "size": "1280x720"}, None)
    assert (request.seconds, request.resolution) == (5, "720p")
    assert request.most_msat(VIDEO) == 40_000
    assert request.cost(VIDEO, Fraction(4), "1280x720").total_msat == 32_000
    assert request.cost(VIDEO, None, None).total_msat == 40_000
    default = VideoRequest.read({"prompt": "waves"}, 6)
    assert (default.seconds, default.duration_given) == (6, False)
    assert VideoRequest.read({"prompt": "waves"}, None).seconds == DEFAULT_VIDEO_SECONDS
    with pytest.raises(UnsupportedSize):
        VideoRequest.read({"prompt": "waves", "size": "huge"}, 4)
    for bad in (0, -1, "x", True, 10**6):
        with pytest.raises(ApiError) as raised:
            VideoRequest.read({"prompt": "waves", "duration": bad}, 4)
        assert raised.value.code == "invalid_duration"


@given(
    units=st.integers(min_value=0, max_value=10**6),
    rate=st.fractions(min_value=0, max_value=10**7),
    fee=st.integers(min_value=0, max_value=10**6),
    is_input=st.booleans(),
)
def test_units_cost_rounds_up_once_and_adds_the_fee(
    units: int, rate: Fraction, fee: int, is_input: bool
) -> None:
    price = ModelPrice(Fraction(0), Fraction(0), fee, 0, 0)
    cost = units_cost(price, rate, units, is_input=is_input)
    assert cost.total_msat == math.ceil(units * rate) + fee
    assert (cost.input_msat if is_input else cost.output_msat) == math.ceil(units * rate)


@given(st.fractions(min_value=0, max_value=10**6))
def test_started_seconds(seconds: Fraction) -> None:
    assert started_seconds(seconds) - 1 < seconds <= started_seconds(seconds)


def test_seconds_of_reads_numbers_and_numeric_strings() -> None:
    assert seconds_of(4) == 4
    assert seconds_of("8") == 8
    assert seconds_of(2.5) == Fraction(5, 2)
    for bad in (None, True, "x", float("nan"), [1]):
        assert seconds_of(bad) is None
