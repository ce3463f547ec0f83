#!/bin/sh
# Run last in an image's build stage: take out of the virtual environment what a runtime image
# must not hold (tests/system/test_compose.py checks): the installers (pip, setuptools, wheel),
# test and benchmark tools that wheels ship (tritonclient's perf_analyzer, onnx's
# backend-test-tools, onnxruntime_test, OpenVINO's benchmark_app) and packages' own test suites.
set -eu
VENV=${1:-/opt/venv}
SITE=$(echo "$VENV"/lib/python3*/site-packages)
"$VENV/bin/python" -m pip uninstall -q -y pip setuptools wheel 2>/dev/null || true
rm -f "$VENV"/bin/pip "$VENV"/bin/pip3* "$VENV"/bin/perf_analyzer "$VENV"/bin/perf_client \
      "$VENV"/bin/backend-test-tools "$VENV"/bin/onnxruntime_test "$VENV"/bin/benchmark_app \
      "$VENV"/bin/Activate.ps1 "$VENV"/bin/activate.csh "$VENV"/bin/activate.fish
rm -rf "$SITE"/tritonclient/perf_analyzer* "$SITE"/tritonclient-*.data \
       "$SITE"/onnx/backend/test/data "$SITE"/numpy/*/tests "$SITE"/numpy/tests "$SITE"/pandas/tests \
       "$SITE"/openvino/tools/benchmark "$SITE"/sympy/*/tests
find "$VENV" -depth -type d -name __pycache__ -path '*/tests/*' -exec rm -rf {} + 2>/dev/null || true
