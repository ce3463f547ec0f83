"""IPTC ``DigitalSourceType`` in the file's own XMP packet (JPEG, PNG, WebP, MP4).

Some tools strip C2PA manifests but keep XMP, so the file says what it is a second way. Where
each format keeps XMP (Adobe XMP Specification Part 3, "Storage in files"):

- JPEG: an APP1 segment ``http://ns.adobe.com/xap/1.0/\\0`` + packet, placed after SOI/APP0.
- PNG: an ``iTXt`` chunk with keyword ``XML:com.adobe.xmp``, uncompressed, before IDAT.
- WebP: an ``XMP `` chunk in the extended (``VP8X``) layout, with the VP8X XMP flag set (Google's
  WebP container specification); a simple ``VP8``/``VP8L`` file is converted to that layout.
- MP4: a top-level ``uuid`` box with the XMP UUID ``BE7ACFCB-97A9-42E8-9C71-999491E3AFAC``,
  appended at the end of the file (no sample offset moves).

Written before C2PA signing, so the manifest's hash covers the packet too. Read back with
Pillow (``Image.getxmp``, which needs ``defusedxml``) for images and with a box walk plus
``defusedxml`` for MP4.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from defusedxml import ElementTree

from media import formats

#: IPTC NewsCodes digital source type for a composite that includes synthetic elements
#: (https://cv.iptc.org/newscodes/digitalsourcetype/compositeSynthetic): what outputs said until
#: issue 21; ``verify`` still reads it.
COMPOSITE_SYNTHETIC = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeSynthetic"
#: IPTC NewsCodes digital source type of a real capture composited with elements made by a trained
#: model (https://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia): a
#: face swap. What every output says since issue 21 (C2PA 2.2 names it for this kind of edit).
COMPOSITE_WITH_TRAINED_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
#: Types that say a file is wholly or partly AI-made (IPTC NewsCodes digitalsourcetype).
SYNTHETIC_TYPES = frozenset(
    f"http://cv.iptc.org/newscodes/digitalsourcetype/{t}"
    for t in ("trainedAlgorithmicMedia", "compositeSynthetic", "compositeWithTrainedAlgorithmicMedia",
              "algorithmicMedia", "algorithmicallyEnhanced", "dataDrivenMedia"))
IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
XMP_UUID = bytes.fromhex("BE7ACFCB97A942E89C71999491E3AFAC")
_JPEG_XMP_ID = b"http://ns.adobe.com/xap/1.0/\x00"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def xmp_packet(creator_tool: str, digital_source_type: str = COMPOSITE_WITH_TRAINED_MEDIA) -> bytes:
    """A UTF-8 XMP packet with ``Iptc4xmpExt:DigitalSourceType`` and ``xmp:CreatorTool``."""
    esc = creator_tool.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:Iptc4xmpExt="{IPTC_EXT_NS}"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        f'    Iptc4xmpExt:DigitalSourceType="{digital_source_type}"\n'
        f'    xmp:CreatorTool="{esc}"/>\n'
        ' </rdf:RDF>\n'
        '</x:xmpmeta>\n'
        '<?xpacket end="r"?>'
    ).encode("utf-8")


# --- writing -------------------------------------------------------------------------------------

def _is(data: bytes, name: str) -> bool:
    fmt = formats.sniff(data)
    return fmt is not None and fmt.name == name


def _jpeg_with_xmp(data: bytes, packet: bytes) -> bytes:
    if not _is(data, "jpeg"):
        raise ValueError("not a JPEG (no SOI marker)")
    payload = _JPEG_XMP_ID + packet
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("XMP packet too large for one APP1 segment")
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    pos, kept, insert_at = 2, [data[:2]], None
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA or not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            break  # first non-APP segment: the XMP goes before it
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        seg = data[pos:pos + 2 + length]
        if not (marker == 0xE1 and seg[4:4 + len(_JPEG_XMP_ID)] == _JPEG_XMP_ID):  # drop an old packet
            kept.append(seg)
        pos += 2 + length
        if marker == 0xE0:  # after the JFIF APP0
            insert_at = len(kept)
    kept.insert(insert_at if insert_at is not None else 1, segment)
    return b"".join(kept) + data[pos:]


def _png_chunks(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos:pos + 12 + length]
        pos += 12 + length


def _png_with_xmp(data: bytes, packet: bytes) -> bytes:
    if not _is(data, "png"):
        raise ValueError("not a PNG (bad signature)")
    body = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + packet  # keyword, no compression, no lang/key
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    out, done = [_PNG_SIG], False
    for kind, raw in _png_chunks(data):
        if kind == b"iTXt" and raw[8:26] == b"XML:com.adobe.xmp\x00":
            continue
        if kind == b"IDAT" and not done:
            out.append(chunk)
            done = True
        out.append(raw)
    if not done:
        raise ValueError("not a PNG (no IDAT chunk)")
    return b"".join(out)


def _riff_chunks(data: bytes):
    pos = 12
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        yield kind, data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _webp_canvas(chunks: list[tuple[bytes, bytes]]) -> tuple[int, int, bool]:
    for kind, body in chunks:
        if kind == b"VP8 ":  # lossy: frame tag (3), start code 9d 01 2a, 14-bit width and height
            w, h = struct.unpack("<HH", body[6:10])
            return w & 0x3FFF, h & 0x3FFF, False
        if kind == b"VP8L":  # lossless: 0x2f, then 14 bits w-1, 14 bits h-1, 1 bit alpha
            bits = int.from_bytes(body[1:5], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    raise ValueError("WebP without an image chunk")


def _webp_with_xmp(data: bytes, packet: bytes) -> bytes:
    if not _is(data, "webp"):
        raise ValueError("not a WebP (no RIFF/WEBP header)")
    chunks = [(k, b) for k, b in _riff_chunks(data) if k != b"XMP "]
    if chunks and chunks[0][0] == b"VP8X":
        flags = bytes([chunks[0][1][0] | 0x04]) + chunks[0][1][1:]
        chunks[0] = (b"VP8X", flags)
    else:
        w, h, alpha = _webp_canvas(chunks)
        flags = 0x04 | (0x10 if alpha else 0)
        vp8x = bytes([flags, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
        chunks.insert(0, (b"VP8X", vp8x))
    body = b"WEBP" + b"".join(_riff_chunk(k, b) for k, b in chunks) + _riff_chunk(b"XMP ", packet)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def mp4_xmp_box(packet: bytes) -> bytes:
    """A top-level ``uuid`` box holding an XMP packet."""
    return struct.pack(">I", 8 + 16 + len(packet)) + b"uuid" + XMP_UUID + packet


def add_xmp(data: bytes, fmt: str, packet: bytes) -> bytes:
    """``data`` with ``packet`` as its XMP (an existing XMP packet is replaced).

    Args:
        data: an encoded JPEG, PNG, WebP or MP4 file.
        fmt: "jpeg", "png", "webp" or "mp4".
        packet: from ``xmp_packet``.

    Raises:
        ValueError: the bytes are not of that format, or the format is not one of these.
    """
    if fmt == "jpeg":
        return _jpeg_with_xmp(data, packet)
    if fmt == "png":
        return _png_with_xmp(data, packet)
    if fmt == "webp":
        return _webp_with_xmp(data, packet)
    if fmt == "mp4":
        if not _is(data, "mp4"):
            raise ValueError("not an MP4 (no ISO BMFF box first)")
        return data + mp4_xmp_box(packet)
    raise ValueError(f"no XMP writer for {fmt!r}")


def append_mp4_xmp(path: str | Path, packet: bytes) -> None:
    """Append an XMP ``uuid`` box to an MP4 file in place (sample offsets do not move).

    Raises:
        ValueError: the file does not start with an ISO BMFF box (``media.formats``).
        OSError: it cannot be read or written.
    """
    with open(path, "r+b") as f:
        if not _is(f.read(formats.HEAD), "mp4"):
            raise ValueError(f"{path} is not an MP4 (no ISO BMFF box first)")
        f.seek(0, io.SEEK_END)
        f.write(mp4_xmp_box(packet))


# --- reading -------------------------------------------------------------------------------------

def _mp4_packets(data: bytes) -> list[bytes]:
    packets, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = len(data) - pos
        if size < header:
            break
        if kind == b"uuid" and data[pos + header:pos + header + 16] == XMP_UUID:
            packets.append(data[pos + header + 16:pos + size])
        pos += size
    return packets


def _find_dst_in_xml(packet: bytes) -> str | None:
    try:
        root = ElementTree.fromstring(packet.strip(b"\x00 \r\n\t"))
    except ElementTree.ParseError:
        return None
    tag = f"{{{IPTC_EXT_NS}}}DigitalSourceType"
    for el in root.iter():
        if tag in el.attrib:
            return el.attrib[tag].strip()
        if el.tag == tag:
            text = (el.text or "").strip()
            if text:
                return text
            res = el.attrib.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource")
            if res:
                return res.strip()
    return None


def _find_dst_in_dict(d) -> str | None:
    if isinstance(d, dict):
        for k, v in d.items():
            if k == "DigitalSourceType":
                if isinstance(v, str):
                    return v.strip()
                if isinstance(v, dict):
                    return v.get("resource") or v.get("text")
            found = _find_dst_in_dict(v)
            if found:
                return found
    elif isinstance(d, list):
        for v in d:
            found = _find_dst_in_dict(v)
            if found:
                return found
    return None


def read_digital_source_type(data: bytes, fmt: str) -> tuple[bool, str | None]:
    """(XMP packet present, its ``Iptc4xmpExt:DigitalSourceType`` or None).

    Images go through Pillow's ``getxmp`` (an independent reader of what ``add_xmp`` wrote);
    MP4 through a walk over the top-level boxes. XML is parsed with ``defusedxml``.

    Raises:
        ValueError: an unknown format.
    """
    if fmt == "mp4":
        packets = _mp4_packets(data)
        for p in packets:
            dst = _find_dst_in_xml(p)
            if dst:
                return True, dst
        return bool(packets), None
    if fmt not in ("jpeg", "png", "webp"):
        raise ValueError(f"no XMP reader for {fmt!r}")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            xmp = im.getxmp()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False, None
    return bool(xmp), _find_dst_in_dict(xmp)
