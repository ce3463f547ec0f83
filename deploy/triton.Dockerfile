# Triton for the faceswap model repositories (cpu and gpu profiles): NVIDIA's Triton with the
# Python packages the pipeline's Python-backend stages import, pipeline/ itself (with media/,
# whose dependency-free format table pipeline/codec.py imports) and the models' glue.
# Build from the repository root:  docker build -f deploy/triton.Dockerfile -t faceswap-triton:0.1.0 .
# The model repository is not in the image: it is mounted at /models.
ARG TRITON_TAG=24.10-py3
FROM nvcr.io/nvidia/tritonserver:${TRITON_TAG}

# Versions as in requirements.lock (numpy<2, opencv-python-headless<4.11, Pillow<11).
# onnxruntime and openvino: the cpu profile runs its networks in the Python backend
# (pipeline/engines.py; OpenVINO serves bf16 and int8 where the load-time self-check of
# pipeline/precision.py picks them); the gpu profile uses Triton's own backends.
RUN pip install --no-cache-dir \
        'numpy==1.26.4' 'opencv-python-headless==4.10.0.84' 'Pillow==10.4.0' 'onnxruntime==1.20.1' \
        'openvino==2025.3.0'

# Frames on the GPU in the entry points (`faceswap-repository build --profile gpu-trt --pixels device`,
# pipeline/tensor_frames.py) need PyTorch, and torchvision for nvJPEG, beside numpy 1.26, e.g.
#   docker build --build-arg TORCH_PACKAGES="torch==2.5.1 torchvision==0.20.1" -f deploy/triton.Dockerfile .
# (about 5 GB more; without it such a repository's face_swap refuses to load and says so).
ARG TORCH_PACKAGES=""
RUN if [ -n "$TORCH_PACKAGES" ]; then pip install --no-cache-dir 'numpy==1.26.4' $TORCH_PACKAGES; fi

COPY pipeline/ /app/pipeline/
COPY media/ /app/media/
# What the repository's model.py files import: the entry points' model (frame_swapper), the glue,
# the Python networks (onnx_model); the whole package, so a new module cannot be left behind
# (tests/unit/test_deploy.py imports every model.py and checks that its modules are here).
COPY model_repository/ /app/model_repository/
ENV PYTHONPATH=/app
# The precision self-check's decisions and the int8 files (faceswap-repository quantize writes them
# where the repository is built; copy them here, or the cpu profile serves bf16/f32 only).
ENV FACESWAP_CACHE_DIR=/engine_cache

# Not root (the Kubernetes manifests run it as 1000:1000; fsGroup makes /engine_cache writable).
USER 1000:1000
EXPOSE 8000 8001 8002
# memory returns after large requests: launch/server.py, MALLOC_MMAP_THRESHOLD and GRPC_ALLOCATION_POOL
ENV MALLOC_MMAP_THRESHOLD_=16777216
# a 1 GiB CUDA memory pool on GPU 0: with --pixels device the entry points and the networks pass GPU
# tensors through it (Triton's default is 64 MB; launch/server.py's FACESWAP_CUDA_POOL_MB does the same)
CMD ["tritonserver", "--model-repository=/models", "--backend-config=python,shm-growth-byte-size=67108864", \
     "--grpc-infer-allocation-pool-size=0", "--cuda-memory-pool-byte-size=0:1073741824"]
