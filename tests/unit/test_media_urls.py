"""The media URL allow-list compares URLs as URLs (issue 18): each attack that passed the old
string prefix and the usual SSRF forms (gateway.core.urls, no server)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.core.config import Settings
from gateway.core.urls import MediaURLPolicy, URLRefused, parse

PREFIX = "http://127.0.0.1:9000/media/"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9000/media/clip.mp4",
    "http://127.0.0.1:9000/media/a/b/clip.mp4?X-Amz-Signature=abc%2F%3D&x=1",
    "HTTP://127.0.0.1:9000/media/clip.mp4",                 # scheme case
    "http://127.0.0.1:9000/media/./a/../clip.mp4",          # dot segments inside the prefix
    "http://127.0.0.1:9000/media/%41.mp4",                  # an ordinary escape
])
def test_urls_under_the_prefix_pass_normalised(url):
    got = MediaURLPolicy(PREFIX).check(url, "video_url")
    assert got.startswith(PREFIX) and "/./" not in got and "/../" not in got


def test_the_normalised_url_is_what_is_fetched():
    p = MediaURLPolicy("https://Media.Example.COM./r2/")
    assert p.check("https://media.example.com:443/r2/x/../y.mp4?sig=1", "video_url") == \
        "https://media.example.com/r2/y.mp4?sig=1"
    assert MediaURLPolicy("http://[0:0::1]:9000/m/").check("http://[::1]:9000/m/x", "f") == "http://[::1]:9000/m/x"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9000/media/../secret",                 # the reported attack
    "http://127.0.0.1:9000/media/a/../../secret",
    "http://127.0.0.1:9000/mediaX/clip.mp4",                 # not a whole segment
    "http://127.0.0.1:9000/media",                           # the folder's name without its slash
    "http://127.0.0.1:9001/media/clip.mp4",                  # another port
    "https://127.0.0.1:9000/media/clip.mp4",                 # another scheme
    "http://localhost:9000/media/clip.mp4",                  # another spelling of loopback: not equal
    "http://127.0.0.2:9000/media/clip.mp4",
    "http://[::1]:9000/media/clip.mp4",
    "http://[::ffff:127.0.0.1]:9000/media/clip.mp4",
    "http://169.254.169.254/latest/meta-data",
])
def test_urls_elsewhere_are_not_allowed(url):
    policy = MediaURLPolicy(PREFIX)
    with pytest.raises(PermissionError):
        policy.check(url, "video_url")


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:9000@127.0.0.1:9001/media/x", "user name"),  # the reported attack
    ("http://user:pw@127.0.0.1:9000/media/x", "user name"),
    ("http://127.0.0.1:9000/media/%2e%2e/secret", "percent-encoded"),
    ("http://127.0.0.1:9000/media/%2E%2E/secret", "percent-encoded"),
    ("http://127.0.0.1:9000/media/..%2fsecret", "percent-encoded"),
    ("http://127.0.0.1:9000/media/..%5csecret", "percent-encoded"),
    ("http://127.0.0.1:9000/media/%00x", "percent-encoded"),
    ("http://127.0.0.1:9000/media/..\\secret", "backslash"),
    ("http://127.0.0.1:9000\\@evil.example/media/x", "backslash"),
    ("http://127.0.0.1:9000/media/a b", "space"),
    ("http://127.0.0.1:9000/media/x\r\nHost: evil", "control"),
    ("http://127.0.0.1:90000/media/x", "port"),              # the reported malformed port
    ("http://127.0.0.1:9000:1/media/x", "port"),
    ("http://127.0.0.1:abc/media/x", "port"),
    ("http://127.0.0.1:0/media/x", "port"),
    ("http://2130706433:9000/media/x", "IPv4 form"),         # integer loopback
    ("http://0x7f.1:9000/media/x", "IPv4 form"),
    ("http://0177.0.0.1:9000/media/x", "IPv4 form"),
    ("http://127.1:9000/media/x", "IPv4 form"),
    ("http://[fe80::1%25eth0]:9000/media/x", "zone"),
    ("http://[::1:9000/media/x", "malformed"),
    ("file:///etc/passwd", "http or https"),
    ("gopher://127.0.0.1:9000/media/x", "http or https"),
    ("http:///media/x", "no host"),
    ("http://127.0.0.1:9000/media/x#frag", "fragment"),
    ("http://127.0.0.1:9000/media/x%zz", "percent-escape"),
    ("http://ex\u0430mple.com/media/x", "non-ASCII"),
    ("http://-bad-.example/media/x", "DNS name"),
])
def test_malformed_or_ambiguous_urls_are_refused(url, why):
    with pytest.raises(URLRefused) as exc:
        MediaURLPolicy(PREFIX).check(url, "video_url")
    assert why.lower() in str(exc.value).lower()
    assert "video_url" in str(exc.value)


def test_parse_never_echoes_the_query():
    with pytest.raises(URLRefused) as exc:
        parse("http://127.0.0.1:9000/a/%2e?X-Amz-Signature=SECRET", what="result_url")
    assert "SECRET" not in str(exc.value)


def test_prefix_without_path_is_refused():
    with pytest.raises(ValueError, match="has no path: write http://127.0.0.1:9000/ to allow the whole origin"):
        MediaURLPolicy("http://127.0.0.1:9000")
    with pytest.raises(ValidationError, match="has no path"):
        Settings(media_url_prefixes="http://127.0.0.1:9000/media/, http://127.0.0.1:9001")
    for bad in ("http://127.0.0.1:", "ftp://x/", "http://u@x/", "http://x/?sig=1"):
        with pytest.raises(ValueError):
            MediaURLPolicy(bad)
    # a whole origin, written out, allows every path there and nothing else
    whole = MediaURLPolicy("http://127.0.0.1:9000/")
    assert whole.check("http://127.0.0.1:9000/anything", "f") == "http://127.0.0.1:9000/anything"
    assert whole.check("http://127.0.0.1:9000", "f") == "http://127.0.0.1:9000/"
    with pytest.raises((PermissionError, URLRefused)):
        whole.check("http://127.0.0.1:9000.evil.example/x", "f")
    with pytest.raises(PermissionError):
        whole.check("http://127.0.0.1.evil.example:9000/x", "f")
