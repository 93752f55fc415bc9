"""Media requests as the node reads them: what each can cost, and what its answer costs.

One frozen dataclass per route, built from the request before any money moves (a bad
request costs nothing and leaves an X-Cashu token unspent). ``most_msat(price)`` is
what the request can cost at a provider's price (the reservation, the 402 amount);
``cost(price, …)`` is what the provider's answer costs, from what it returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from routstr_node.errors import invalid_request
from routstr_node.media.costs import (
    UnsupportedSize,
    audio_rate,
    char_rate,
    image_rate,
    resolution,
    started_seconds,
    units_cost,
    video_rate,
)
from routstr_node.pricing import Cost, ModelPrice

MAX_IMAGES = 10  # OpenAI's most per request
MAX_VIDEO_SECONDS = 3600  # bounds the reservation; no model makes longer videos
DEFAULT_VIDEO_SECONDS = 4  # OpenAI's default, for a model without default_video_seconds
_AUTO = "auto"  # the upstream chooses (a size or quality): priced as the dearest


def _text(body: dict[str, Any], name: str, code: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise invalid_request(
            code, f"the request must carry '{name}' (a non-empty string)", param=name
        )
    return value


def _option(body: dict[str, Any], name: str) -> str | None:
    """An optional string field; None or "auto" when the upstream is left to choose."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise invalid_request(f"invalid_{name}", f"{name} must be a string", param=name)
    return None if value == _AUTO else value


def seconds_of(value: Any) -> Fraction | None:
    """A JSON number or numeric string as exact seconds (None: not one): a request's
    duration, an upstream's ``usage.seconds``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        try:
            return Fraction(value)
        except (ValueError, ZeroDivisionError):
            return None
    if isinstance(value, float):
        return Fraction(str(value)) if value == value and abs(value) != float("inf") else None
    return None


# -- images -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """POST /v1/images/generations: ``n`` images of ``size`` at ``quality``."""

    n: int
    size: str | None  # None: the upstream chooses ("auto" or absent)
    quality: str | None

    @classmethod
    def read(cls, body: dict[str, Any]) -> ImageRequest:
        _text(body, "prompt", "prompt_required")
        n = body.get("n", 1)
        if n is None:
            n = 1
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
            raise invalid_request(
                "invalid_n", f"n must be an integer from 1 to {MAX_IMAGES}", param="n"
            )
        return cls(n, _option(body, "size"), _option(body, "quality"))

    def most_msat(self, price: ModelPrice) -> int:
        rate = image_rate(price.media, self.size, self.quality)
        return units_cost(price, rate, self.n, is_input=False).total_msat

    def cost(self, price: ModelPrice, returned: int, size: str | None, quality: str | None) -> Cost:
        """``returned`` images, at the size and quality asked for, else at those the
        answer names, else at the dearest (what was reserved)."""
        try:
            rate = image_rate(price.media, self.size or size, self.quality or quality)
        except UnsupportedSize:
            rate = image_rate(price.media, None, None)
        return units_cost(price, rate, returned, is_input=False)


# -- speech -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """POST /v1/audio/speech: ``chars`` characters of ``input`` spoken."""

    chars: int

    @classmethod
    def read(cls, body: dict[str, Any]) -> SpeechRequest:
        return cls(len(_text(body, "input", "input_required")))

    def most_msat(self, price: ModelPrice) -> int:
        return self.cost(price).total_msat

    def cost(self, price: ModelPrice) -> Cost:
        """Known before the answer: the characters of the input."""
        return units_cost(price, char_rate(price.media), self.chars, is_input=True)


# -- transcription ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    """POST /v1/audio/transcriptions and /translations: an uploaded audio file.

    ``measured`` is its duration read from the file (None: unreadable); the reservation
    is that, else the model's ``max_audio_seconds``.
    """

    measured: Fraction | None
    max_seconds: int

    @property
    def reserved_seconds(self) -> int:
        if self.measured is None:
            return self.max_seconds
        return started_seconds(self.measured)

    def most_msat(self, price: ModelPrice) -> int:
        rate = audio_rate(price.media)
        return units_cost(price, rate, self.reserved_seconds, is_input=True).total_msat

    def seconds(self, reported: Fraction | None) -> int:
        """The seconds charged: the upstream's reported seconds, else the measured
        duration, never above the reservation's."""
        if reported is not None and reported >= 0:
            charged = started_seconds(reported)
        elif self.measured is not None:
            charged = started_seconds(self.measured)
        else:
            charged = self.reserved_seconds
        return min(charged, self.reserved_seconds)

    def cost(self, price: ModelPrice, seconds: int) -> Cost:
        return units_cost(price, audio_rate(price.media), seconds, is_input=True)


# -- video --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VideoRequest:
    """POST /v1/video/generations: ``seconds`` of video at ``resolution``."""

    seconds: int  # started seconds asked for (or the model's default)
    size: str | None  # as the client wrote it (None: the upstream chooses)
    resolution: str | None  # its resolution name ("720p")
    duration_given: bool  # False: the node sends the duration it reserved for

    @classmethod
    def read(cls, body: dict[str, Any], default_seconds: int | None) -> VideoRequest:
        _text(body, "prompt", "prompt_required")
        given = body.get("duration")
        if given is None:
            seconds = default_seconds or DEFAULT_VIDEO_SECONDS
        else:
            exact = seconds_of(given)
            if exact is None or not 0 < exact <= MAX_VIDEO_SECONDS:
                raise invalid_request(
                    "invalid_duration",
                    f"duration must be a number of seconds, above 0 and at most"
                    f" {MAX_VIDEO_SECONDS}",
                    param="duration",
                )
            seconds = started_seconds(exact)
        size = _option(body, "size")
        at = None if size is None else resolution(size)
        if size is not None and at is None:
            raise UnsupportedSize(
                f"'{size}' is not a video size: a resolution (720p, 1080p, 4K) or WIDTHxHEIGHT"
            )
        return cls(seconds, size, at, given is not None)

    def most_msat(self, price: ModelPrice) -> int:
        rate = video_rate(price.media, self.resolution)
        return units_cost(price, rate, self.seconds, is_input=False).total_msat

    def billed(self, seconds: Fraction | None, size: str | None) -> tuple[int, str | None]:
        """The started seconds of video returned (None: as many as asked for) and their
        resolution (the one returned, else the one asked for; None: unknown)."""
        returned = self.seconds if seconds is None else started_seconds(seconds)
        return returned, (resolution(size) if size else None) or self.resolution

    def cost(self, price: ModelPrice, seconds: Fraction | None, size: str | None) -> Cost:
        """What ``billed`` says, at the rate of its resolution (unknown or unpriced: the
        dearest, what was reserved)."""
        returned, at = self.billed(seconds, size)
        try:
            rate = video_rate(price.media, at)
        except UnsupportedSize:
            rate = video_rate(price.media, None)
        return units_cost(price, rate, returned, is_input=False)
