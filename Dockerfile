# Image that serves the `update-model` deployment (or runs any `pipeline` command).
#   docker build -t model-update .                                   # CPU build of torch (~1 GB): CPU hosts
#   docker build --build-arg TORCH=cu128 -t model-update:cuda .       # CUDA build: GPU hosts (NVIDIA driver for
#   docker run --gpus all ... model-update:cuda                       #   CUDA 12.8+, NVIDIA Container Toolkit)
#   docker run --rm -e PREFECT_API_URL=http://prefect:4200/api -v "$PWD:/workspace" model-update
# The same commands pick the GPU when one is visible (PIPELINE_DEVICE=auto), the CPU otherwise.
# S3 registry: -e PIPELINE_S3_BUCKET=... plus AWS_* credentials from the environment, never baked in.
FROM python:3.11-slim-bookworm

# cpu, or a CUDA variant of torch 2.14.1 on download.pytorch.org (e.g. cu128)
ARG TORCH=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_LOGGING_EXTRA_LOGGERS=pipeline \
    PIPELINE_CACHE_DIR=/home/app/.cache/pipeline

# git: DVC repositories are git repositories
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 app

WORKDIR /opt/pipeline
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline ./pipeline
COPY flows ./flows
# torch first, the build TORCH names; constraints.txt pins everything else to the versions the tests ran with.
RUN pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH}" torch==2.14.1 torchvision==0.29.1 \
    && pip install --no-cache-dir -c constraints.txt .

USER 10001
WORKDIR /workspace
ENTRYPOINT ["python", "-m", "flows.deploy"]
CMD ["--workspace", "/workspace"]
