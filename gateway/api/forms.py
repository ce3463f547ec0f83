"""The multipart forms of the routes that take uploads, as dependency classes: each field is
declared once here (type, limits, description, example) and documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import File, Form, UploadFile

#: Video containers the jobs take (judged from the bytes).
VIDEO_FORMATS = "mp4, mov, mkv, webm, avi"
FACE_ID_EXAMPLE = "5f1c0e9a2b7d4c6f8e3a1b2c3d4e5f60"
#: The JSON in ``pairs`` (else 422 invalid_option).
PAIRS = {"type": "array", "minItems": 1, "items": {
    "type": "object", "required": ["reference_face_id", "source_face_id"],
    "properties": {"reference_face_id": {"type": "string"}, "source_face_id": {"type": "string"}}}}
#: Face sizes ``pixel_boost`` takes.
PIXEL_BOOSTS = [128, 256, 384, 512]


def exactly_one(*fields: str) -> dict[str, Any]:
    """JSON Schema: exactly one of ``fields`` is sent, and not empty (an empty form field counts
    as left out)."""
    return {"oneOf": [{"required": [f], "properties": {f: {"minLength": 1}}} for f in fields]}


def body_rules(rules: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` of a route: JSON Schema ``rules`` across the fields of its multipart form
    (which one of several fields, which values go together), added to the form's schema."""
    return {"requestBody": {"content": {"multipart/form-data": {"schema": rules}}}}


class SwapForm:
    """``POST /v1/swap``: a target, and one of: a source photo, ``source_face_id``, ``pairs``."""

    #: exactly one source (else 422 missing_source); face_index with selection all or index
    #: (else 422 invalid_option)
    rules = {**exactly_one("source", "source_face_id", "pairs"),
             "if": {"required": ["face_index"], "properties": {"face_index": {"type": "integer"}}},
             "then": {"properties": {"selection": {"enum": ["all", "index", ""]}}}}

    def __init__(
        self,
        target: Annotated[UploadFile, File(description="Image whose faces are replaced")],
        source: Annotated[UploadFile | None, File(description="Photo of the wanted face (its largest face)")] = None,
        source_face_id: Annotated[str | None, Form(description="A face registered with POST /v1/faces",
                                                   examples=[FACE_ID_EXAMPLE])] = None,
        pairs: Annotated[str | None, Form(description='JSON list of {"reference_face_id", "source_face_id"}',
                                          examples=['[{"reference_face_id": "ab..", "source_face_id": "cd.."}]'],
                                          json_schema_extra={"contentMediaType": "application/json",
                                                             "contentSchema": PAIRS})] = None,
        selection: Annotated[Literal["all", "largest", "index"], Form(examples=["largest"])] = "all",
        face_index: Annotated[int | None, Form(ge=0, description="detection order (score); implies "
                                                                 "selection=index")] = None,
        max_faces: Annotated[int, Form(ge=0, description="0 = server cap (64)", examples=[4])] = 0,
        output_format: Annotated[Literal["auto", "jpeg", "png", "webp"],
                                 Form(description="auto = the target's format", examples=["png"])] = "auto",
        quality: Annotated[int, Form(ge=1, le=100, description="jpeg/webp quality", examples=[90])] = 95,
        threshold: Annotated[float, Form(ge=-1, le=1, description="min cosine similarity for pairs",
                                         examples=[0.35])] = 0.3,
        pixel_boost: Annotated[int, Form(description="face swapped at 128, 256, 384 or 512 px",
                                         examples=[256], json_schema_extra={"enum": PIXEL_BOOSTS})] = 128,
        badge: Annotated[bool, Form(description="burn a visible \"AI-generated\" label into the output's "
                                                "bottom-right corner (when a face was swapped; images under about "
                                                "100 px wide get none); the invisible marks are there either way",
                                    examples=[True])] = False,
    ) -> None:
        self.badge = badge
        self.target, self.source, self.source_face_id, self.pairs = target, source, source_face_id, pairs
        self.selection, self.face_index, self.max_faces = selection, face_index, max_faces
        self.output_format, self.quality, self.threshold, self.pixel_boost = (output_format, quality, threshold,
                                                                              pixel_boost)


class JobForm:
    """``POST /v1/jobs``: one medium (upload or URL), and a source photo or ``source_face_id``."""

    #: exactly one medium (else 422 missing_media) and one source (else 422 missing_source)
    rules = {"allOf": [exactly_one("video", "images", "archive", "video_url", "archive_url"),
                       exactly_one("source", "source_face_id")]}

    def __init__(
        self,
        video: Annotated[UploadFile | None, File(description=f"A video ({VIDEO_FORMATS})")] = None,
        images: Annotated[list[UploadFile] | None, File(description="Several images (a batch)")] = None,
        archive: Annotated[UploadFile | None, File(description="A zip of images (a batch)")] = None,
        video_url: Annotated[str | None, Form(description="Instead of `video`: a URL the service GETs the video "
                                                          "from (e.g. a presigned R2/S3 URL); it must start with one "
                                                          "of the operator's media_url_prefixes")] = None,
        archive_url: Annotated[str | None, Form(description="Instead of `archive`: a URL of the zip")] = None,
        result_url: Annotated[str | None, Form(description="A URL the result is PUT to when the job is done (e.g. "
                                                           "a presigned R2/S3 PUT URL); the job then shows "
                                                           "result_url_used")] = None,
        source: Annotated[UploadFile | None, File(description="Photo of the wanted face (its largest face)")] = None,
        source_face_id: Annotated[str | None, Form(description="A face registered with POST /v1/faces",
                                                   examples=[FACE_ID_EXAMPLE])] = None,
        reference_face_id: Annotated[str | None, Form(description="Video: swap the person most similar to this "
                                                                  "registered face")] = None,
        selection: Annotated[Literal["largest", "all"], Form(description="Video: one tracked person, or all")
                             ] = "largest",
        smoothing: Annotated[bool, Form(description="Video: key-point smoothing against flicker")] = True,
        output_format: Annotated[Literal["auto", "jpeg", "png", "webp"], Form(description="Batch")] = "auto",
    ) -> None:
        self.video, self.images, self.archive = video, images, archive
        self.video_url, self.archive_url, self.result_url = video_url, archive_url, result_url
        self.source, self.source_face_id, self.reference_face_id = source, source_face_id, reference_face_id
        self.selection, self.smoothing, self.output_format = selection, smoothing, output_format
