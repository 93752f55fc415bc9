"""How long an uploaded audio file plays, read by mutagen (mp3, wav, m4a/mp4, ogg, flac).

mutagen reads the headers (and for an MP3 without them, the bitrate and the file's
size), not the samples: about a millisecond for a 25 MB file. A format it does not
know (webm among them) or a file it cannot make sense of is None: the transcription
then reserves the model's ``max_audio_seconds``.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import IO

import mutagen

log = logging.getLogger(__name__)

_PRECISION = 1_000_000  # mutagen's float lengths, to the microsecond


def audio_seconds(audio: IO[bytes]) -> Fraction | None:
    """The duration of the audio in ``audio`` (read from its start), or None."""
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
