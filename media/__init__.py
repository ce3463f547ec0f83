"""Media code shared by the client CLI and the gateway: byte sniffing (``media.formats``), video
(``media.video``, ``media.tracking``) and image batches (``media.batch``).

Nothing is imported here: ``media.formats`` is dependency-free (Triton's Python backend imports
it through ``pipeline.codec``), the others need PyAV, OpenCV and the client library.
"""
