# grokpipe on a CUDA-capable PyTorch base: `docker build -t grokpipe .` then
# `docker run --gpus all -v $PWD/outputs:/app/outputs grokpipe` (arguments are launch.py overrides).
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WANDB_DIR=/app/outputs

WORKDIR /app
COPY pyproject.toml README.md ./
COPY grokpipe/ grokpipe/
COPY conf/ conf/
COPY launch.py ./

# the README's install step (same pins); torch==2.13.0 is already in the base image
RUN python -m pip install --no-cache-dir . \
    && useradd --uid 10001 --create-home grok \
    && mkdir -p /app/outputs \
    && chown -R 10001:10001 /app

USER 10001
ENTRYPOINT ["python", "launch.py"]
CMD []
