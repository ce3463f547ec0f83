"""The OpenAPI document is the contract: Schemathesis fuzzes a real gateway (tiny stand-ins in a
real Triton) against ``/openapi.json`` and every answer must be what the document says.

Every phase (examples, coverage, fuzzing, stateful: the links from ``POST /v1/faces`` and
``POST /v1/jobs`` are followed), every check, the seed and the examples per operation fixed in
``tests/server/schemathesis.toml`` (which also says why two checks know more about two
operations). Real files go where the document can only say "binary"
(``tests/support/schemathesis_hooks.py``). About 1.5 minutes on 2 cores. The reports (JUnit,
NDJSON, a VCR cassette of every request) are kept in ``out/schemathesis/``; a failure prints
where, with Schemathesis' own account of each failure and how to replay it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from repository.layout import ROOT
from tests.support.servers import Gateway

CONFIG = ROOT / "tests" / "server" / "schemathesis.toml"
REPORTS = ROOT / "out" / "schemathesis"
#: Media URLs are accepted under this prefix; nothing listens there, so a job given one fails to
#: fetch it (input_fetch_failed), as a job whose presigned URL has gone does.
MEDIA_PREFIX = "http://127.0.0.1:9/media/"


def test_gateway_answers_as_its_openapi_document_says(gw_triton, tmp_path):
    g = Gateway(gw_triton.grpc_url, tmp_path / "faces.sqlite3")
    g.env.update({"FACESWAP_GATEWAY_JOBS_DIR": str(tmp_path / "jobs"),
                  "FACESWAP_GATEWAY_MEDIA_URL_PREFIXES": MEDIA_PREFIX})
    g.start()
    REPORTS.mkdir(parents=True, exist_ok=True)
    for old in (*REPORTS.glob("junit-*.xml"), *REPORTS.glob("ndjson-*.ndjson"), *REPORTS.glob("vcr-*.yaml")):
        old.unlink()  # this run's reports only
    try:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color", "run",
             f"{g.url}/openapi.json", "--report", "junit,ndjson,vcr", "--report-dir", str(REPORTS)],
            cwd=ROOT, env={**os.environ, "FACESWAP_GATEWAY_MEDIA_URL_PREFIXES": MEDIA_PREFIX},
            capture_output=True, text=True, timeout=540)
    finally:
        g.stop()
    (REPORTS / "output.txt").write_text(run.stdout + run.stderr)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):] if "SUMMARY" in run.stdout else run.stdout[-3000:]
    assert run.returncode == 0, (f"the gateway does not answer as /openapi.json says (Schemathesis exit "
                                 f"{run.returncode}); full output and reports in {REPORTS} (gateway log "
                                 f"{g.log}):\n{summary}\n{run.stderr[-2000:]}")
    generated = re.search(r"(\d+) generated", summary)
    assert generated and int(generated.group(1)) > 0, summary
