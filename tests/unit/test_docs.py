"""/docs and /redoc work offline: every script and stylesheet they load is served by the gateway.
The reference in docs/: tables that restate code are generated from it; the README indexes every page."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from gateway.core.config import Settings, markdown
from gateway.main import create_app
from repository.layout import ROOT

BASE = "http://testserver"

TYPES = {"script": ("javascript",), "link": ("css", "image/")}  # link: stylesheet or favicon


class _Assets(HTMLParser):
    """(tag, url) of every <script src> and <link href> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.found.append((tag, a["src"]))
        elif tag == "link" and a.get("href"):
            self.found.append((tag, a["href"]))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    app = create_app(Settings(store_path=tmp / "faces.sqlite3", jobs_dir=tmp / "jobs", triton_url="127.0.0.1:1"))
    with TestClient(app, base_url=BASE) as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_gateway(client, page):
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    parser = _Assets()
    parser.feed(r.text)
    assert any(tag == "script" for tag, _ in parser.found), f"{page} loads no script"
    for tag, url in parser.found:
        parts = urlsplit(urljoin(BASE + page, url))
        assert f"{parts.scheme}://{parts.netloc}" == BASE, f"{page} loads {url} from another host"
        asset = client.get(parts.path + (f"?{parts.query}" if parts.query else ""))
        assert asset.status_code == 200, f"{url}: {asset.status_code}"
        ctype = asset.headers["content-type"]
        assert any(t in ctype for t in TYPES[tag]), f"{url}: {ctype}"
        assert len(asset.content) > 1000 or tag == "link"


def test_docs_page_has_no_external_url(client):
    """Nothing else on the pages (fonts, favicons, inline imports) points off the gateway."""
    for page in ("/docs", "/redoc"):
        text = client.get(page).text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, page


def test_openapi_json_is_served(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    spec = r.json()
    assert spec["info"]["title"] == "faceswap gateway" and "/v1/swap" in spec["paths"]
    assert not any(p.startswith("/docs") for p in spec["paths"])


def test_settings_table_in_the_docs_is_generated_from_the_settings_class():
    doc = (ROOT / "docs" / "gateway.md").read_text()
    block = doc.split("<!-- settings:start -->", 1)[1].split("<!-- settings:end -->", 1)[0].strip()
    assert block == markdown(), "docs/gateway.md's table of settings is stale: paste `python -m gateway.core.config`"
    assert len(block.splitlines()) == 2 + len(Settings.model_fields)


def test_readme_links_resolve_and_index_every_reference_page():
    readme = (ROOT / "README.md").read_text()
    links = {m for m in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme) if "://" not in m}
    missing = sorted(link for link in links if not (ROOT / link).exists())
    assert not missing, f"README.md links to files that do not exist: {missing}"
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} - {"docs/index.md"}
    assert not pages - links, f"README.md's reference index misses {sorted(pages - links)}"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("TRACE", "/healthz", "GET"), ("PUT", "/metrics", "GET"), ("POST", "/v1/stream", "GET"),
    ("OPTIONS", "/v1/faces/" + "0" * 32, "GET, DELETE"), ("GET", "/v1/verify", "POST")])
def test_every_405_says_which_methods_the_path_takes(client, method, path, allow):
    r = client.request(method, path)
    assert (r.status_code, r.json()["code"], r.headers["allow"]) == (405, "method_not_allowed", allow)


def test_openapi_document_is_exact(client):
    spec = client.get("/openapi.json").json()
    schemas, paths = spec["components"]["schemas"], spec["paths"]
    assert "HTTPValidationError" not in schemas and "null" not in str(paths)
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert "426" in paths["/v1/stream"]["get"]["responses"]
    swap = schemas["Body_swap_v1_swap_post"]["properties"]
    forms = {name: s for name, s in schemas.items() if name.startswith("Body_")}
    assert swap["target"]["minLength"] == 1 and "null" not in str(forms)
    not_found = paths["/v1/faces/{face_id}"]["get"]["responses"]["404"]["content"]["application/json"]["schema"]
    assert set(not_found["properties"]["code"]["enum"]) == {"face_not_found", "not_found"}
    links = paths["/v1/faces"]["post"]["responses"]["200"]["links"]
    assert links["GetFace"]["parameters"] == {"face_id": "$response.body#/faces/0/id"}
    assert set(paths["/v1/jobs"]["post"]["responses"]["202"]["links"]) == {"GetJob", "GetJobResult", "DeleteJob"}
    assert "unknown form fields and query parameters are ignored" in spec["info"]["description"]
