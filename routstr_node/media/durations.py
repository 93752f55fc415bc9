"""How long an uploaded audio file plays: mutagen reads mp3, wav, m4a/mp4, ogg and flac,
enzyme reads webm (Matroska), which mutagen does not.

Both read the headers (and for an MP3 without them, the bitrate and the file's size),
not the samples: about a millisecond for a 25 MB file. A file neither can make sense of
(a webm recorded in a browser often names no duration) is None: the transcription then
reserves the model's ``max_audio_seconds``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from fractions import Fraction
from typing import IO

import enzyme
import mutagen

log = logging.getLogger(__name__)

_PRECISION = 1_000_000  # mutagen's float lengths, to the microsecond
_EBML = b"\x1a\x45\xdf\xa3"  # what a Matroska (webm) file starts with


def audio_seconds(audio: IO[bytes]) -> Fraction | None:
    """The duration of the audio in ``audio`` (read from its start), or None."""
    audio.seek(0)
    if audio.read(4) == _EBML:
        return _matroska_seconds(audio)
    audio.seek(0)
    try:
        found = mutagen.File(audio)
    except Exception as exc:  # any file a client sends: an unreadable one is not an error
        log.debug("audio duration unreadable: %s", type(exc).__name__)
        return None
    length = getattr(getattr(found, "info", None), "length", None)
    if not isinstance(length, int | float) or not 0 < length < float("inf"):
        return None
    return Fraction(length).limit_denominator(_PRECISION)


def _matroska_seconds(audio: IO[bytes]) -> Fraction | None:
    audio.seek(0)
    try:
        duration = enzyme.MKV(audio).info.duration
    except Exception as exc:  # any file a client sends: an unreadable one is not an error
        log.debug("webm duration unreadable: %s", type(exc).__name__)
        return None
    if duration is None or duration.total_seconds() <= 0:
        return None
    # a timedelta holds whole microseconds: exact as a Fraction
    return Fraction(duration // timedelta(microseconds=1), 1_000_000)
