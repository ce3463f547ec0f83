#!/usr/bin/env bash
# Build TensorRT engines for the `gpu-trt` profile (run inside NVIDIA's Triton or TensorRT
# container, on the GPU that will serve them: engines are specific to GPU and TensorRT version).
#
#   .venv/bin/faceswap-repository build --profile gpu      # copies the ONNX files to build/gpu
#   .venv/bin/faceswap-repository build --profile gpu-trt  # configs for tensorrt_plan
#   docker run --gpus all -v $PWD/build:/build nvcr.io/nvidia/tensorrt:24.10-py3 \
#       bash /build/../repository/build_engines.sh /build          # or run it where trtexec is
#
# Each engine file name shows its build settings (e.g. inswapper_128_b8_fp32.plan) and
# model.plan links to it. The swapper stays fp32 unless SWAPPER_PRECISION=fp16 is set: fp16
# inswapper users report noisy faces, so check parity first. inswapper's emap is an
# initializer that a plan hides: repository/generate.py has already extracted it to
# face_analyzer/emap.npy, and the pipeline applies it outside the engine.
set -euo pipefail
BUILD=${1:-build}
SRC=$BUILD/gpu
DST=$BUILD/gpu-trt
SWAPPER_PRECISION=${SWAPPER_PRECISION:-fp32}
command -v trtexec >/dev/null || { echo "trtexec not found: run inside a TensorRT/Triton container" >&2; exit 2; }

build() {  # name onnx-model-dir precision shapes...
  local name=$1 model=$2 precision=$3; shift 3
  local out="$DST/$model/1/${name}_${precision}.plan"
  local flags=()
  [ "$precision" = fp16 ] && flags+=(--fp16)
  echo "== $model: $out"
  trtexec --onnx="$SRC/$model/1/model.onnx" --saveEngine="$out" "${flags[@]}" "$@" --skipInference
  ln -sf "$(basename "$out")" "$DST/$model/1/model.plan"
}

build det_640 face_detector fp16 --shapes=input.1:1x3x640x640
build w600k_r50_b32 face_recognizer fp16 \
  --minShapes=input.1:1x3x112x112 --optShapes=input.1:8x3x112x112 --maxShapes=input.1:32x3x112x112
build inswapper_128_b8 face_swapper "$SWAPPER_PRECISION" \
  --minShapes=target:1x3x128x128,source:1x512 --optShapes=target:4x3x128x128,source:4x512 \
  --maxShapes=target:8x3x128x128,source:8x512
# the content gate's detector (pipeline.content: images [N, 3, 320, 320] -> output0 [N, 22, 2100]), fp32
build content_320_b8 content_detector fp32 \
  --minShapes=images:1x3x320x320 --optShapes=images:1x3x320x320 --maxShapes=images:8x3x320x320
echo "engines built under $DST"
