"""What a media request can cost and what its answer costs (contract section 10).

Pure functions over a provider's MediaRates: exact Fractions of a msat per unit, the
product rounded up to the msat once, plus the provider's request fee. A unit is an
image, a character of speech input, or a started second of audio or video (4.5 s is
5 s). Prices are looked up as node.toml writes them: a ``size/quality`` key wins over
``size``, which wins over the plain per-image price; a video's resolution is a name
(``720p``, ``4K``) or ``WIDTHxHEIGHT``, whose resolution is the shorter side. A
provider with no price at all for what a route sells serves it for free, as a model
without prices does (the node warns about it at start).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from fractions import Fraction

from routstr_node.pricing import Cost, MediaRates, ModelPrice, with_request_fee


class UnsupportedSize(Exception):
    """The provider has no price for this size or resolution: 400 unsupported_size."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


FREE = Fraction(0)

# -- counting -----------------------------------------------------------------------------


def started_seconds(seconds: Fraction) -> int:
    """Whole seconds, a started one counted: 4.5 s is 5 s, 0 s is 0."""
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return math.ceil(seconds)


def units_cost(price: ModelPrice, rate: Fraction, units: int, *, is_input: bool) -> Cost:
    """``units`` at ``rate`` msat each, rounded up once, plus the request fee; booked as
    input (what the client sent: characters, audio) or output (images, video)."""
    if units < 0:
        raise ValueError("a count of units cannot be negative")
    msat = math.ceil(units * rate)
    return with_request_fee(price, msat, 0) if is_input else with_request_fee(price, 0, msat)


# -- images -------------------------------------------------------------------------------


def image_rate(rates: MediaRates, size: str | None, quality: str | None) -> Fraction:
    """The price of one image of ``size`` at ``quality``.

    A request naming no size could get any: the dearest price there is. Raises
    UnsupportedSize when the provider prices neither that size nor images in general.
    """
    by_size = rates.image_msat_by_size
    known = [*by_size.values(), *([rates.image_msat] if rates.image_msat is not None else [])]
    if not known:
        return FREE
    if size is None:
        return max(known)
    if quality is not None and (rate := by_size.get(f"{size}/{quality}")) is not None:
        return rate
    if (rate := by_size.get(size)) is not None:
        return rate
    if rates.image_msat is not None:
        return rates.image_msat
    priced = ", ".join(sorted(by_size)) or "none"
    shown = f"{size}/{quality}" if quality is not None else size
    raise UnsupportedSize(f"the size '{shown}' is not sold for this model (priced: {priced})")


# -- speech and audio -----------------------------------------------------------------------


def char_rate(rates: MediaRates) -> Fraction:
    return FREE if rates.char_msat is None else rates.char_msat


def audio_rate(rates: MediaRates) -> Fraction:
    """Per second: ``audio_*_per_minute`` billed per started second."""
    return FREE if rates.audio_msat_per_second is None else rates.audio_msat_per_second


# -- video --------------------------------------------------------------------------------

_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
_LINES = re.compile(r"([1-9][0-9]{0,4})p")
_K = re.compile(r"([1-9][0-9]?)k")
# the lines of the "K" names in use (consumer naming: 2K is 1440p, 4K is 2160p)
_K_LINES = {2: 1440, 4: 2160, 5: 2880, 8: 4320}


def resolution(size: str) -> str | None:
    """A video size as a resolution name: ``1280x720`` and ``720P`` are ``720p``, ``4K`` and
    ``3840x2160`` are ``2160p``; a ``K`` name without a known height stays ``8K``-like.
    None: not a size."""
    text = size.strip().lower()
    if match := _SIZE.fullmatch(text):
        return f"{min(int(match[1]), int(match[2]))}p"
    if match := _LINES.fullmatch(text):
        return f"{int(match[1])}p"
    if match := _K.fullmatch(text):
        k = int(match[1])
        return f"{_K_LINES[k]}p" if k in _K_LINES else f"{k}K"
    return None


def _by_resolution(rates: MediaRates) -> Mapping[str, Fraction]:
    return {resolution(key) or key: rate for key, rate in rates.video_msat_by_resolution.items()}


def video_rate(rates: MediaRates, at: str | None) -> Fraction:
    """The price of a second of video at resolution ``at`` (see ``resolution``).

    None (the upstream chooses): the dearest there is. A resolution without a price of
    its own takes the plain per-second price; without that, UnsupportedSize.
    """
    by_resolution = _by_resolution(rates)
    plain = rates.video_msat_per_second
    known = [*by_resolution.values(), *([plain] if plain is not None else [])]
    if not known:
        return FREE
    if at is None:
        return max(known)
    rate = by_resolution.get(at, plain)
    if rate is None:
        priced = ", ".join(sorted(rates.video_msat_by_resolution)) or "none"
        raise UnsupportedSize(
            f"the resolution '{at}' is not sold for this model (priced: {priced})"
        )
    return rate
