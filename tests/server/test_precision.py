"""The precision each network serves in, on a real Triton: forced by FACESWAP_PRECISION, and
reported in Triton's metrics as the load-time self-check chose it."""

from __future__ import annotations

import shutil
import urllib.request

from pipeline import precision as prec


def test_triton_reports_the_precision_of_each_network(triton):
    page = urllib.request.urlopen(f"http://127.0.0.1:{triton.ports.metrics}/metrics", timeout=10).read().decode()
    from gateway.core.precision import parse

    nets = parse(page)
    assert set(nets) == {"face_detector", "face_recognizer", "face_swapper", "content_detector"}, page[-2000:]
    for net in nets.values():
        assert net["precision"] in prec.PRECISIONS
        assert net["chosen_by"] in ("self-check", "cache", "setting", "no probe")
        if net["chosen_by"] in ("self-check", "cache") and len(net.get("probe", {})) > 1:
            chosen = net["probe"][f"{net['precision']} ({net['engine']})"]
            assert chosen["passed"] == 1
            assert chosen["ms"] == min(v["ms"] for v in net["probe"].values() if v.get("passed") == 1 and "ms" in v)
    log = triton.log_file.read_text()
    assert all(f"{m}: {nets[m]['precision']} ({nets[m]['engine']}) chosen by" in log for m in nets)


def test_forced_precision_is_served_and_said(models, tmp_path, monkeypatch):
    from tests.support.servers import start_triton

    monkeypatch.setenv("FACESWAP_PRECISION", "f32")
    monkeypatch.setenv("FACESWAP_CACHE_DIR", str(tmp_path / "cache"))
    server = start_triton(models, tmp_path)
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=10).read().decode()
    finally:
        server.stop()
    from gateway.core.precision import parse

    nets = parse(page)
    assert {m: (n["precision"], n["chosen_by"]) for m, n in nets.items()} == {
        m: ("f32", "setting") for m in ("face_detector", "face_recognizer", "face_swapper", "content_detector")}
    assert not (tmp_path / "cache" / "int8").exists()  # nothing quantized when f32 is forced
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
