"""The RunPod worker's input checks (runpod_worker.jobs.parse_input) and the container entry's
refusals (launch.container), without the SDK, Triton or a container: every message names what
to change. The worker itself runs in tests/server/test_runpod.py."""

from __future__ import annotations

import pytest

from runpod_worker.jobs import DEFAULT_MAX_INLINE_BYTES, JobError, client_error, parse_input


def test_a_swap_with_a_registered_face_parses_with_defaults():
    job = parse_input({"task": "swap", "target": {"url": "https://media.example.com/a.jpg"},
                       "source_face_id": "f" * 32})
    assert job.task == "swap" and job.target.url.endswith("a.jpg") and job.max_inline_bytes == DEFAULT_MAX_INLINE_BYTES
    assert job.options == {}


@pytest.mark.parametrize("raw, message", [
    ("swap", "the job's input must be a JSON object, not str"),
    ({"task": "swap", "target": {"base64": "aGk="}}, "needs exactly one of source or source_face_id"),
    ({"task": "swap", "target": {"base64": "aGk="}, "source": {"base64": "aGk="}, "source_face_id": "x"},
     "needs exactly one of source or source_face_id"),
    ({"task": "swap", "target": {"base64": "aGk=", "url": "https://x/"}, "source_face_id": "x"},
     "target: give exactly one of base64 or url"),
    ({"task": "video", "video_url": "https://x/v.mp4", "target": {"base64": "aGk="}, "source_face_id": "x"},
     "task 'video' takes video_url, not target"),
    ({"task": "register", "image": {"base64": "aGk="}, "source_face_id": "x"}, "task 'register' takes no source"),
    ({"task": "swap", "target": {"base64": "aGk="}, "source_face_id": "x", "max_inline_bytes": -1},
     "max_inline_bytes: Input should be greater than or equal to 0"),
])
def test_bad_inputs_are_invalid_input_naming_the_field(raw, message):
    with pytest.raises(JobError) as err:
        parse_input(raw)
    assert err.value.code == "invalid_input" and message in str(err.value), str(err.value)
    assert err.value.as_output() == {"error": f"invalid_input: {err.value}"}


def test_client_errors_keep_their_meaning():
    from client.errors import ModelOutputInvalid, NoFaceError, Overloaded

    assert client_error(ModelOutputInvalid("face_swapper returned NaN")).code == "model_output_invalid"
    assert client_error(NoFaceError("no face found in the source image")).code == "no_face"
    assert client_error(Overloaded("queue full")).code == "triton_unavailable"


def test_container_entry_refuses_a_folder_without_a_repository(tmp_path, caplog):
    from launch.container import main

    assert main(["--repository", str(tmp_path), "--dry-run"]) == 2
    assert "holds no model repository" in caplog.text
