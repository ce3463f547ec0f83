"""What a file is, judged from its first bytes: the one table of the formats the service knows.

Every check asks ``sniff`` (uploads and the Triton image decoder, job inputs, live frames, files
to verify, the target of a C2PA ingredient, entries of a zip) and keeps its own accepted set, by
``kind`` or ``name``. A name or a client's content type never decides; ``by_extension`` is only
for the one caller that falls back to a name when the bytes say nothing (``provenance.verify``).

The Cloudflare Worker holds the same table in TypeScript (``worker/src/formats.ts``); both are
tested against the files in ``tests/fixtures/formats/`` so that they cannot drift apart.

Standard library only: Triton's Python backend imports this through ``pipeline.codec``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Leading bytes ``sniff`` needs: every signature ends within them.
HEAD = 16


@dataclass(frozen=True)
class Format:
    """One row of the table.

    Attributes:
        kind: "image", "video" or "archive".
        name: what callers call it (MP4 and QuickTime share "mp4": one container family, one
            code path; only their MIME types differ).
        mime: the MIME type.
        extensions: file name extensions, lower case, without the dot.
        magic: signatures, any one of which identifies the format; a signature is
            ``{offset: bytes}``, and matches when the bytes are at every one of its offsets.
    """

    kind: str
    name: str
    mime: str
    extensions: tuple[str, ...]
    magic: tuple[dict[int, bytes], ...]

    def matches(self, head: bytes) -> bool:
        """True when one of the signatures is in ``head`` (a file's first bytes)."""
        return any(all(head[at:at + len(sig)] == sig for at, sig in m.items()) for m in self.magic)


#: Box types an ISO BMFF (MP4) or QuickTime file may start with: ``ftyp`` in any MP4 and in
#: QuickTime files since 2001; older QuickTime files open with their movie (``moov``), their
#: media data (``mdat``) or padding (``wide``, ``free``, ``skip``).
ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")

#: First match wins: QuickTime's ``ftyp`` brand before MP4's boxes.
FORMATS = (
    Format("image", "jpeg", "image/jpeg", ("jpg", "jpeg"), ({0: b"\xff\xd8\xff"},)),
    Format("image", "png", "image/png", ("png",), ({0: b"\x89PNG\r\n\x1a\n"},)),
    Format("image", "webp", "image/webp", ("webp",), ({0: b"RIFF", 8: b"WEBP"},)),
    Format("image", "bmp", "image/bmp", ("bmp",), ({0: b"BM"},)),
    Format("image", "tiff", "image/tiff", ("tif", "tiff"), ({0: b"II*\x00"}, {0: b"MM\x00*"})),
    Format("video", "mp4", "video/quicktime", ("mov",), ({4: b"ftyp", 8: b"qt"},)),
    Format("video", "mp4", "video/mp4", ("mp4", "m4v"), tuple({4: box} for box in ISO_BOXES)),
    Format("video", "mkv", "video/x-matroska", ("mkv", "webm"), ({0: b"\x1a\x45\xdf\xa3"},)),  # WebM too (EBML)
    Format("video", "avi", "video/x-msvideo", ("avi",), ({0: b"RIFF", 8: b"AVI"},)),
    Format("archive", "zip", "application/zip", ("zip",), ({0: b"PK\x03\x04"},)),
    # a zip without entries is only its end record: not a batch, but still an archive inside one
    Format("archive", "empty-zip", "application/zip", (), ({0: b"PK\x05\x06"},)),
    Format("archive", "gzip", "application/gzip", ("gz",), ({0: b"\x1f\x8b"},)),
    Format("archive", "7z", "application/x-7z-compressed", ("7z",), ({0: b"7z\xbc\xaf\x27\x1c"},)),
    Format("archive", "rar", "application/vnd.rar", ("rar",), ({0: b"Rar!"},)),
    Format("archive", "bzip2", "application/x-bzip2", ("bz2",), ({0: b"BZh"},)),
    Format("archive", "xz", "application/x-xz", ("xz",), ({0: b"\xfd7zXZ"},)),
)


def sniff(head: bytes) -> Format | None:
    """The format of a file from its first bytes (``HEAD`` of them are enough), or None."""
    head = bytes(head[:HEAD])
    return next((f for f in FORMATS if f.matches(head)), None)


def by_extension(filename: str) -> Format | None:
    """The format a file name's extension names, or None (a fallback for when bytes say nothing)."""
    ext = filename.rsplit(".", 1)[1].lower() if "." in filename else ""
    return next((f for f in FORMATS if ext in f.extensions), None)
