# grokpipe on the CPU: `docker build --build-arg GROKPIPE_COMMIT="$(git rev-parse HEAD)" -t grokpipe .` then
# `docker run -v "$PWD/outputs:/app/outputs" grokpipe` (arguments are launch.py overrides).
# The base is python:3.11-slim (Python 3.11.16) by digest, so every build starts from the same image; to move it,
# `docker buildx imagetools inspect python:3.11-slim` prints the tag's current digest (its first "Digest:").
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    WANDB_DIR=/app/outputs

WORKDIR /app

# The README's install, line for line (before the sources, so that a code change keeps this layer): a current pip;
# torch's CPU build alone from PyTorch's index (-c: the lock's pin and hashes); the rest of requirements.lock from
# PyPI, the locked pip with it, every file checked against the lock's hashes. Only the first pip is unpinned (DL3013):
# the base image's may be too old for hashes in a -c file, and the third line replaces it by the lock's.
COPY requirements.lock ./
# hadolint ignore=DL3013
RUN python -m pip install --upgrade pip \
    && python -m pip install --no-deps --index-url https://download.pytorch.org/whl/cpu -c requirements.lock torch \
    && python -m pip install --require-hashes -r requirements.lock

# the commit the image is built from, for each run's provenance (the image has no .git):
# `docker build --build-arg GROKPIPE_COMMIT="$(git rev-parse HEAD)" -t grokpipe .`
ARG GROKPIPE_COMMIT=""
ENV GROKPIPE_COMMIT=${GROKPIPE_COMMIT}

COPY pyproject.toml README.md launch.py ./
COPY grokpipe/ grokpipe/
COPY hydra_plugins/ hydra_plugins/
COPY conf/ conf/

# grokpipe itself, its dependencies all installed above, built by the locked setuptools
RUN python -m pip install --no-deps --no-build-isolation . \
    && useradd --uid 10001 --create-home grok \
    && mkdir -p /app/outputs \
    && chown -R 10001:10001 /app

USER 10001
ENTRYPOINT ["python", "launch.py"]
CMD []
