"""A clip upload, streamed from the request straight into a private folder, with a size limit.

The multipart body is parsed as it arrives (python-multipart's streaming parser), so an upload
never sits whole in memory and never lands in a shared temporary folder: its bytes go to
`<private dir>/upload<suffix>`, the folder made by `tempfile.mkdtemp` (mode 0700). The name the
client gave is used for two things only, the suffix (its media type) and the `clip` field of the
answer (its last path component); no path from the client is ever opened.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from python_multipart.multipart import MultipartParser, parse_options_header

from emofuse.features.decode import MEDIA_SUFFIXES

# Every container the decoder reads (the list `extract` scans folders with), so a clip that
# `emofuse predict` scores is never refused here for its name: CREMA-D's .flv, a phone's .mov,
# an .mkv, an audio-only .m4a (a run that needs vision then answers 422 no_video_track, which
# says why, instead of a 415 that blames the container). The page records webm (MediaRecorder).
SUFFIXES: tuple[str, ...] = MEDIA_SUFFIXES
# A part without a file-name suffix (a blob from the page, curl -F 'file=@-;type=...') is named
# from its content type. PyAV probes the content, so the suffix only has to be one it accepts:
# audio/mp4 becomes .m4a and video/ogg .ogg; a Theora or Opus stream in it decodes the same.
CONTENT_TYPES: dict[str, str] = {
    "video/mp4": ".mp4", "application/mp4": ".mp4", "video/x-m4v": ".m4v",
    "video/webm": ".webm", "audio/webm": ".webm",
    "video/x-msvideo": ".avi", "video/avi": ".avi", "video/msvideo": ".avi",
    "video/x-matroska": ".mkv", "audio/x-matroska": ".mkv", "video/matroska": ".mkv",
    "video/quicktime": ".mov",
    "video/x-flv": ".flv", "video/flv": ".flv",
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/vnd.wave": ".wav",
    "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/x-mp3": ".mp3", "audio/mpeg3": ".mp3",
    "audio/flac": ".flac", "audio/x-flac": ".flac",
    "audio/mp4": ".m4a", "audio/x-m4a": ".m4a", "audio/m4a": ".m4a",
    "audio/aac": ".aac", "audio/x-aac": ".aac", "audio/aacp": ".aac",
    "audio/ogg": ".ogg", "application/ogg": ".ogg", "video/ogg": ".ogg", "audio/vorbis": ".ogg",
    "audio/opus": ".opus",
}
MAX_FIELD_BYTES = 64 * 1024  # the transcript: plenty for a clip's words


class UploadError(Exception):
    """A request whose body cannot be taken; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def client_name(filename: str) -> str:
    """The last component of the client's file name, printable, for messages only."""
    name = PureWindowsPath(PurePosixPath(filename).name).name
    name = re.sub(r"[^\w.\- ]", "_", name)[:120]
    return name or "upload"


def media_suffix(filename: str, content_type: str) -> str:
    """The upload's suffix from its name, else from its part's content type; 415 otherwise."""
    suffix = Path(client_name(filename)).suffix.lower()
    if suffix in SUFFIXES:
        return suffix
    base = content_type.split(";")[0].strip().lower()
    if not suffix and base in CONTENT_TYPES:
        return CONTENT_TYPES[base]
    what = f"{suffix} files" if suffix else f"content type {base or 'unknown'}"
    raise UploadError(415, "unsupported_media_type",
                      f"{client_name(filename)}: {what} are not accepted; send one of {', '.join(SUFFIXES)}")


@dataclass
class Upload:
    path: Path | None = None  # where the clip's bytes are, inside the private folder
    name: str = ""  # the client's file name (last component)
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


async def receive_clip(content_type: str, body: AsyncIterator[bytes], folder: Path, max_bytes: int,
                       file_field: str = "file") -> Upload:
    """Parse a multipart/form-data body into `folder`: the file part `file_field` and small text fields."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError(415, "unsupported_media_type",
                          "send the clip as multipart/form-data with a 'file' part (curl -F file=@clip.mp4)")
    upload = Upload()
    state: dict[str, object] = {}
    errors: list[UploadError] = []

    def on_part_begin() -> None:
        state.update(headers={}, field=b"", value=b"", name="", sink=None, text=None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] = state["field"] + data[start:end]  # type: ignore[operator]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] = state["value"] + data[start:end]  # type: ignore[operator]

    def on_header_end() -> None:
        headers = state["headers"]
        headers[bytes(state["field"]).lower()] = bytes(state["value"])  # type: ignore[index, arg-type]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        headers: dict[bytes, bytes] = state["headers"]  # type: ignore[assignment]
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if b"filename" not in disposition:
            state["text"] = bytearray()
            return
        if name != file_field or upload.path is not None:
            raise UploadError(
                422, "bad_request", f"one file part named '{file_field}' is expected, got '{name}'"
            )
        filename = disposition[b"filename"].decode("utf-8", "replace")
        suffix = media_suffix(filename, headers.get(b"content-type", b"").decode("latin-1"))
        # named after the client's file (its stem, cleaned) so the explain picture's title shows it
        upload.name = client_name(filename)
        upload.path = folder / f"{Path(upload.name).stem[:80] or 'upload'}{suffix}"
        state["sink"] = open(upload.path, "wb")  # noqa: SIM115 - closed in on_part_end or below

    def on_part_data(data: bytes, start: int, end: int) -> None:
        sink, text = state["sink"], state["text"]
        if sink is not None:
            upload.size += end - start
            if upload.size > max_bytes:
                raise UploadError(413, "too_large", f"{upload.name}: larger than the {_mb(max_bytes)} limit")
            sink.write(data[start:end])  # type: ignore[attr-defined]
        elif text is not None:
            if len(text) + end - start > MAX_FIELD_BYTES:  # type: ignore[arg-type]
                raise UploadError(
                    413, "too_large", f"form field '{state['name']}' is over {MAX_FIELD_BYTES} bytes"
                )
            text.extend(data[start:end])  # type: ignore[attr-defined]

    def on_part_end() -> None:
        sink, text = state.get("sink"), state.get("text")
        if sink is not None:
            sink.close()  # type: ignore[attr-defined]
        elif text is not None:
            upload.fields[str(state["name"])] = bytes(text).decode("utf-8", "replace")  # type: ignore[arg-type]

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            # the file part is checked above; this bounds everything else (many small text fields)
            if received > max_bytes + 16 * MAX_FIELD_BYTES:
                raise UploadError(413, "too_large", f"the request is over the {_mb(max_bytes)} upload limit")
            parser.write(chunk)
        parser.finalize()
    except UploadError as err:
        errors.append(err)
    except ValueError as err:  # python-multipart's own parse errors are ValueErrors
        errors.append(UploadError(422, "bad_request", f"the multipart body cannot be parsed ({err})"))
    finally:
        sink = state.get("sink")
        if sink is not None and not sink.closed:  # type: ignore[attr-defined]
            sink.close()  # type: ignore[attr-defined]
    if errors:
        raise errors[0]
    if upload.path is None:
        raise UploadError(
            422, "no_file", f"the form has no '{file_field}' file part (curl -F file=@clip.mp4)"
        )
    return upload


def _mb(n: int) -> str:
    return f"{n / 1e6:g} MB" if n >= 1e6 else f"{n} bytes"
