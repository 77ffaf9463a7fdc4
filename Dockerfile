# wavenet-server image: a slim Debian (bookworm, Python 3.11) runtime with a virtual environment built in a separate
# stage, CPU-only torch, the bundled model, a non-root user and a HEALTHCHECK that asks the gRPC health service.
# Works with the classic builder (docker 20.10, docker-compose 1.29): no BuildKit-only syntax.
#
#   docker build -t wavenet-stream .            (or: docker-compose build; see docs/deploy.md)
#
# Build inputs beside the source, both optional and not tracked (deploy/prepare-context.sh fills them):
#   deploy/wheels/torch-<version>+cpu-*.whl   a local CPU torch wheel; without one, torch comes from TORCH_INDEX_URL
#   deploy/certs/ca-bundle.crt                a CA bundle for pip (a TLS-intercepting proxy); builder stage only
ARG BASE=debian:bookworm-slim

# --- builder: compilers and headers, the venv, the C++ extension (models/generate/csrc) when setup.py builds one ---------------
FROM ${BASE} AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
COPY deploy/certs/ /tmp/certs/
# torch first, on its own, and only ever the CPU build: the local wheel if the context carries one, else PyTorch's
# CPU index. The build fails if a CUDA build or any nvidia-* package got in.
COPY deploy/wheels/ /tmp/wheels/
RUN if [ -f /tmp/certs/ca-bundle.crt ]; then export PIP_CERT=/tmp/certs/ca-bundle.crt; fi \
 && whl=$(ls /tmp/wheels/torch-"$TORCH_VERSION"+cpu-*.whl 2>/dev/null | head -n1) \
 && if [ -n "$whl" ]; then pip install "$whl"; \
    else pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION+cpu"; fi \
 && python -c "import torch; assert torch.version.cuda is None, torch.version.cuda; print('torch', torch.__version__)" \
 && if pip list 2>/dev/null | grep -i '^nvidia-'; then echo 'CUDA packages in the image' >&2; exit 1; fi
# The runtime dependencies from pyproject.toml in their own layer (kept across source edits), then the project.
COPY pyproject.toml /src/pyproject.toml
RUN if [ -f /tmp/certs/ca-bundle.crt ]; then export PIP_CERT=/tmp/certs/ca-bundle.crt; fi \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY . /src
RUN if [ -f /tmp/certs/ca-bundle.crt ]; then export PIP_CERT=/tmp/certs/ca-bundle.crt; fi \
 && pip install --no-deps /src \
 && pip check \
 && ls /opt/venv/lib/python3.11/site-packages/models/ \
 # what serving never runs (~180 MB): torch's C++ headers, CMake files, C++ test binaries, protoc
 && cd /opt/venv/lib/python3.11/site-packages/torch \
 && rm -rf include share test bin/*Test bin/test_* bin/protoc* bin/*.pt bin/*.ptl bin/upgrader_models

# --- runtime: python3 and the venv; no compiler, no headers, no pip cache --------------------------------------------
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 wavenet \
 && useradd --system --uid 10001 --gid wavenet --home-dir /home/wavenet --create-home --shell /usr/sbin/nologin wavenet \
 && mkdir -p /models
COPY --from=builder /opt/venv /opt/venv
COPY models/default.pt /opt/wavenet/models/default.pt
COPY deploy/entrypoint.sh deploy/healthcheck.py /opt/wavenet/
# `wavenet-server` with no --model looks for the bundled model beside the installed package.
RUN ln -s /opt/wavenet/models/default.pt /opt/venv/lib/python3.11/site-packages/models/default.pt \
 && python3 -m compileall -q /opt/wavenet/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WAVENET_PORT=50051 \
    WAVENET_MODEL_DIR=/models
USER wavenet
WORKDIR /home/wavenet
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["python", "/opt/wavenet/healthcheck.py"]
ENTRYPOINT ["/opt/wavenet/entrypoint.sh"]
CMD ["serve"]
