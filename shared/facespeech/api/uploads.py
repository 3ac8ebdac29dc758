"""Request bodies streamed to a temporary file with the size limit enforced while reading.

Starlette's own form parsing spools the whole file before a handler runs, so uploads are read
here from the raw stream: either the body itself (any content type but multipart) or a
multipart form parsed incrementally by streaming-form-data.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from streaming_form_data import StreamingFormDataParser
from streaming_form_data.targets import BaseTarget, ValueTarget
from streaming_form_data.validators import MaxSizeValidator, ValidationError

from facespeech.api.problems import Problem
from facespeech.object_keys import safe_filename

MAX_FIELD_BYTES = 64 * 1024


@dataclass
class ReceivedUpload:
    path: Path
    filename: str
    content_type: str
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _HashingFile:
    """Writes chunks to a file, counting and hashing them, and refusing past the limit."""

    def __init__(self, sink: IO[bytes], max_bytes: int) -> None:
        self.sink, self.max_bytes = sink, max_bytes
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise _too_large(self.max_bytes)
        self.digest.update(chunk)
        self.sink.write(chunk)


class _FileTarget(BaseTarget):
    def __init__(self, writer: _HashingFile) -> None:
        super().__init__()
        self.writer = writer
        self.seen = False

    def on_data_received(self, chunk: bytes) -> None:
        self.seen = True
        self.writer.write(chunk)


def upload_openapi(file_field: str, value_fields: tuple[str, ...]) -> dict[str, Any]:
    """The request body a streamed-upload route reads itself, for its OpenAPI operation."""
    properties: dict[str, Any] = {file_field: {"type": "string", "format": "binary"}}
    properties.update({name: {"type": "string", "maxLength": 255} for name in value_fields})
    form = {"type": "object", "required": [file_field], "properties": properties}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": form},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


def _too_large(max_bytes: int) -> Problem:
    return Problem(413, "Payload Too Large", f"the upload exceeds the limit of {max_bytes} bytes")


def _declared_length(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES:
        raise _too_large(max_bytes)


def _raw_filename(request: Request) -> str:
    return request.query_params.get("filename") or request.headers.get("x-filename") or "upload"


async def receive_upload(
    request: Request, dest_dir: Path, max_bytes: int, file_field: str, value_fields: tuple[str, ...]
) -> ReceivedUpload:
    """Stream the request's file into dest_dir; 413 past max_bytes, 422 when it is empty."""
    _declared_length(request, max_bytes)
    dest_dir.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=dest_dir, delete=False, suffix=".upload")
    path = Path(handle.name)
    try:
        with handle:
            writer = _HashingFile(handle, max_bytes)
            content_type = request.headers.get("content-type", "application/octet-stream")
            if content_type.startswith("multipart/form-data"):
                filename, part_type, fields = await _read_multipart(
                    request, writer, file_field, value_fields
                )
            else:
                async for chunk in request.stream():
                    writer.write(chunk)
                filename, part_type, fields = _raw_filename(request), content_type, {}
                fields.update({k: v for k, v in request.query_params.items() if k in value_fields})
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if writer.size == 0:
        path.unlink(missing_ok=True)
        raise Problem(422, "Empty Upload", f"the '{file_field}' upload has no bytes")
    return ReceivedUpload(
        path, safe_filename(filename), part_type, writer.size, writer.digest.hexdigest(), fields
    )


async def _read_multipart(
    request: Request, writer: _HashingFile, file_field: str, value_fields: tuple[str, ...]
) -> tuple[str, str, dict[str, str]]:
    parser = StreamingFormDataParser(headers=dict(request.headers))
    target = _FileTarget(writer)
    parser.register(file_field, target)
    values = {
        name: ValueTarget(validator=MaxSizeValidator(MAX_FIELD_BYTES)) for name in value_fields
    }
    for name, value_target in values.items():
        parser.register(name, value_target)
    try:
        async for chunk in request.stream():
            parser.data_received(chunk)
    except ValidationError as error:
        raise Problem(
            413, "Field Too Large", f"a form field is over {MAX_FIELD_BYTES} bytes"
        ) from error
    except Problem:
        raise
    except Exception as error:  # the parser raises plain exceptions on malformed bodies
        raise Problem(400, "Malformed Multipart Body", str(error)) from error
    if not target.seen:
        raise Problem(422, "Missing File", f"the form has no '{file_field}' file part")
    fields = {name: t.value.decode("utf-8", "replace") for name, t in values.items() if t.value}
    return target.multipart_filename or "upload", target.multipart_content_type or "", fields
