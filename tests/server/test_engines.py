"""The embedded server on OpenVINO in bf16 (FACESWAP_ENGINE, FACESWAP_PRECISION) swaps every face."""

from __future__ import annotations

try:
    import openvino  # noqa: F401
except ImportError as exc:  # a missing package fails the tests, saying what to install
    raise ImportError("install openvino (make setup does)") from exc


def test_server_on_openvino_bf16_swaps(models, tmp_path, monkeypatch):
    from client import FaceSwapClient
    from launch.server import TritonServer
    from repository.generate import build
    from tests.support.photos import image_path
    from tests.support.servers import free_ports

    monkeypatch.setenv("FACESWAP_ENGINE", "openvino")
    monkeypatch.setenv("FACESWAP_PRECISION", "bf16")
    build(tmp_path / "repo", "cpu", models)
    with TritonServer(tmp_path / "repo", free_ports(), run_dir=tmp_path) as server:
        with FaceSwapClient(server.grpc_url, "grpc") as c:
            latent = c.embed(image_path("portrait_obama_official.jpg")).largest().latent
            res = c.swap(image_path("group_insightface_t1.jpg"), latent)
    assert res.faces_swapped == 6
