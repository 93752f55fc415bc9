"""An uploaded file's spool, sent to providers through descriptors of its own."""

from __future__ import annotations

import tempfile

from routstr_node.media.upload import Upload, UploadedFile, upstream_form


def test_a_partly_sent_upload_closes_cleanly_after_its_duration_was_read() -> None:
    """The duration is read through the spool's buffer (read-ahead left in it); a
    provider that answers an error before the file is sent leaves the offset the spool
    shares with the sent descriptor at its start. Closing the spool must not fail then:
    it did, with EINVAL, when the buffer's read-ahead was rewound below zero (a 500
    where the client was owed the provider's 502)."""
    data = bytes(range(256)) * 4096  # 1 MiB
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed below: that is the test)
    spool.write(data)
    spool.flush()
    spool.seek(0)
    assert spool.read(12) == data[:12]  # the duration's header read: read-ahead kept
    upload = Upload({"model": "whisper"}, UploadedFile("a.wav", "audio/wav", len(data), spool))
    with upstream_form(upload, "whisper-1", ()):
        pass  # the provider answered 502 before any of the file was sent
    spool.close()  # raised OSError(EINVAL) before the fix
