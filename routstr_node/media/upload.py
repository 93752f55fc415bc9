"""A multipart upload (an audio file and its form fields), read as it arrives.

The body comes through ``body_chunks`` (the request-body bounds: size, idle time) into
python-multipart's push parser; the file part is written to an unnamed temporary file
in data_dir as it arrives, in blocks of SPOOL_BLOCK_BYTES, so an upload is held in
memory at most one block at a time, never whole. The file is then read from disk for
its duration and sent to the upstream from disk (again to the next provider after a
failover).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
from aiohttp import web
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from routstr_node.errors import invalid_request
from routstr_node.request_body import body_chunks

SPOOL_BLOCK_BYTES = 1024 * 1024  # written to disk a block at a time: the memory an upload holds
MAX_FIELD_BYTES = 64 * 1024  # a text field (a prompt, a language); a file has no such bound
MAX_FIELDS = 64
FILE_FIELD = "file"


@dataclass
class UploadedFile:
    name: str
    content_type: str
    size: int
    spool: IO[bytes]  # an unnamed temporary file, deleted when closed


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    file: UploadedFile | None = None


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    filename: str | None = None
    content_type: str = "application/octet-stream"
    text: bytearray = field(default_factory=bytearray)
    size: int = 0


class _Collector:
    """python-multipart's callbacks: parts and their bytes, gathered between two writes
    of the parser; the caller then spools them (asynchronously)."""

    def __init__(self) -> None:
        self.part = _Part()
        self.parts: list[_Part] = []
        self.file_bytes: list[bytes] = []  # of the file part, since the caller last took them
        self.ended = False
        self._field = b""
        self._value = b""

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self._field.decode("latin-1").lower()] = self._value.decode("utf-8")
        self._field = self._value = b""

    def on_headers_finished(self) -> None:
        part = self.part
        _, options = parse_options_header(part.headers.get("content-disposition", ""))
        name, filename = options.get(b"name"), options.get(b"filename")
        part.name = name.decode("utf-8", "replace") if name is not None else None
        part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        content_type = part.headers.get("content-type")
        if content_type:
            part.content_type = content_type
        if len(self.parts) >= MAX_FIELDS:
            raise invalid_request("invalid_body", f"the form has more than {MAX_FIELDS} parts")
        self.parts.append(part)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        part.size += end - start
        if part.filename is not None:
            if part.name == FILE_FIELD:
                self.file_bytes.append(data[start:end])
            return  # another file: not kept
        if part.size > MAX_FIELD_BYTES:
            raise invalid_request(
                "invalid_body", f"the form field '{part.name}' is over {MAX_FIELD_BYTES} bytes"
            )
        part.text += data[start:end]

    def on_end(self) -> None:
        self.ended = True


def _boundary(request: web.Request) -> bytes:
    kind, options = parse_options_header(request.headers.get("Content-Type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise invalid_request(
            "file_required",
            "this route takes multipart/form-data with the audio in a 'file' part",
            param=FILE_FIELD,
        )
    return boundary


@contextlib.asynccontextmanager
async def received_upload(
    request: web.Request, max_bytes: int, idle_s: float, spool_dir: Path
) -> AsyncIterator[Upload]:
    """The request's form, its file spooled to ``spool_dir`` (deleted at the block's end)."""
    boundary = _boundary(request)
    collector = _Collector()
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_part_data": collector.on_part_data,
            "on_end": collector.on_end,
        },
    )
    spool = await asyncio.to_thread(_spool_file, spool_dir)
    try:
        pending: list[bytes] = []
        pending_size = 0
        async for chunk in body_chunks(request, max_bytes, idle_s):
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise invalid_request(
                    "invalid_body", f"the multipart body is malformed: {exc}"
                ) from None
            if collector.file_bytes:
                pending += collector.file_bytes
                pending_size += sum(len(b) for b in collector.file_bytes)
                collector.file_bytes.clear()
            if pending_size >= SPOOL_BLOCK_BYTES:
                await asyncio.to_thread(spool.writelines, pending)
                pending, pending_size = [], 0
        if pending:
            await asyncio.to_thread(spool.writelines, pending)
        await asyncio.to_thread(spool.flush)  # all of it in the file: it is read by descriptor
        if not collector.ended:
            raise invalid_request("invalid_body", "the multipart body ended before its last part")
        yield _upload(collector.parts, spool)
    finally:
        await asyncio.to_thread(spool.close)


def _spool_file(directory: Path) -> IO[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryFile(dir=directory)


def _upload(parts: list[_Part], spool: IO[bytes]) -> Upload:
    upload = Upload()
    for part in parts:
        if part.name is None:
            continue
        if part.filename is None:
            upload.fields[part.name] = part.text.decode("utf-8", "replace")
        elif part.name == FILE_FIELD and upload.file is None:
            upload.file = UploadedFile(
                part.filename or "audio", part.content_type, part.size, spool
            )
    return upload


@contextlib.contextmanager
def upstream_form(
    upload: Upload, upstream_model: str, removed: tuple[str, ...]
) -> Iterator[aiohttp.MultipartWriter]:
    """The form an upstream gets: the client's fields (its name for the model, without the
    node's own fields), then the file, streamed from the spool from its start.

    aiohttp closes a file it has sent: it gets a file of its own on the spool's data (a
    duplicate descriptor), so that the spool stays open for the next provider."""
    form = text_form(_fields(upload, upstream_model, removed))
    if upload.file is None:
        yield form
        return
    # the spool's buffer must hold no read-ahead (the duration was read through it): at
    # close it rewinds the offset it shares with the descriptor by that much, and after a
    # partial send that is below zero (EINVAL: a 500 where the client was owed the
    # upstream's error). A seek from the end always drops the buffer; one to the start may
    # only move within it.
    upload.file.spool.seek(0, os.SEEK_END)
    descriptor = os.dup(upload.file.spool.fileno())
    os.lseek(descriptor, 0, os.SEEK_SET)  # the spool's offset too: they share it
    with os.fdopen(descriptor, "rb") as sent:
        part = form.append(sent, {"Content-Type": upload.file.content_type})
        part.set_content_disposition("form-data", name=FILE_FIELD, filename=upload.file.name)
        yield form


def _fields(
    upload: Upload, upstream_model: str, removed: tuple[str, ...]
) -> Iterator[tuple[str, str]]:
    for name, value in upload.fields.items():
        if name in removed:
            continue
        yield name, upstream_model if name == "model" else value


def text_form(fields: Iterable[tuple[str, str]]) -> aiohttp.MultipartWriter:
    """A multipart form of text fields (more parts may be appended)."""
    form = aiohttp.MultipartWriter("form-data")
    for name, value in fields:
        part = form.append(value)
        part.set_content_disposition("form-data", name=name)
    return form
