"""media.formats: the one format table, against the fixture files the Worker's test reads too
(worker/test/formats.test.ts), and the callers that keep their own accepted sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media.formats import FORMATS, HEAD, by_extension, sniff

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
#: name -> bytes: the files, and the near misses kept as hex in near-misses.json
DATA = {p.name: p.read_bytes() for p in FIXTURES.iterdir() if p.suffix not in (".json", ".md")} | {
    name: bytes.fromhex(h) for name, h in json.loads((FIXTURES / "near-misses.json").read_text()).items()}


def test_every_fixture_file_has_an_expectation():
    assert set(DATA) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sniff_names_each_fixture_from_its_bytes(name):
    fmt = sniff(DATA[name])
    got = None if fmt is None else {"kind": fmt.kind, "name": fmt.name, "mime": fmt.mime}
    assert got == EXPECTED[name]


def test_every_signature_ends_within_the_head():
    assert all(at + len(sig) <= HEAD for f in FORMATS for m in f.magic for at, sig in m.items())


def test_extensions_name_one_format_each():
    exts = [e for f in FORMATS for e in f.extensions]
    assert len(exts) == len(set(exts))
    assert by_extension("clip.MOV").mime == "video/quicktime" and by_extension("clip.mov").name == "mp4"
    assert by_extension("photo.jpg").name == "jpeg" and by_extension("noext") is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_caller_accepts_its_kinds_of_the_table(name):
    from gateway.core.stream import frame_format
    from gateway.jobs.execute import is_zip, sniff_video
    from pipeline.codec import SUPPORTED_INPUT, sniff_format

    data, want = DATA[name], EXPECTED[name] or {}
    assert sniff_format(data) == (want["name"] if want.get("name") in SUPPORTED_INPUT else None)
    assert sniff_video(data) == (want["name"] if want.get("kind") == "video" else None)
    assert is_zip(data) == (want.get("name") == "zip")
    assert frame_format(data) == (want["name"] if want.get("name") in ("jpeg", "webp") else None)
