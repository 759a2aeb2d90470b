# syntax=docker/dockerfile:1
# The worker image: a volunteer's `autoswarm worker`, and on a cluster every Ray pod
# (KubeRay head and GPU workers) and the `autoswarm ray-workers` launcher. Experiments
# run inside bubblewrap; see docs/operators.md for what a pod needs to let it start.
#
# Build from the repository root (BuildKit, the default builder since Docker 23, also
# reads deploy/docker/worker.Dockerfile.dockerignore):
#   docker build -f deploy/docker/worker.Dockerfile -t autoswarm/worker:0.1.0 .
# A volunteer's GPU: docker run --gpus all, the security options that let bubblewrap
# start (seccomp=unconfined, apparmor=unconfined, systempaths=unconfined), a volume on
# /var/lib/autoswarm, then `worker --join URL --token T` (docs/operators.md, "Images").
# RAY_VERSION must equal spec.rayVersion of deploy/k8s/base/raycluster.yaml (a test checks).

ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

FROM ${CUDA_IMAGE}
ARG RAY_VERSION=2.60.0
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# python3: Ubuntu 24.04's 3.12. bubblewrap: the experiment sandbox. wget: KubeRay's
# liveness and readiness probes call it inside Ray containers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv bubblewrap wget ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/autoswarm/venv
# A read-write bind of the build context: the source never lands in an image layer.
RUN --mount=type=bind,target=/src,rw \
    /opt/autoswarm/venv/bin/pip install "/src[worker,ray]" "ray[default]==${RAY_VERSION}"
# KubeRay starts Ray through `bash -lc`, and a login shell may reset PATH: link the
# entry points where every PATH looks.
RUN ln -s /opt/autoswarm/venv/bin/autoswarm /opt/autoswarm/venv/bin/ray /usr/local/bin/
RUN groupadd --gid 10001 autoswarm \
 && useradd --uid 10001 --gid 10001 --create-home --shell /bin/bash autoswarm \
 && mkdir -p /var/lib/autoswarm \
 && chown 10001:10001 /var/lib/autoswarm
# No setuid or setgid programs: nothing in the container can regain privileges, even
# where a pod must allow privilege escalation. bubblewrap needs none: it uses
# unprivileged user namespaces.
RUN find / -xdev -perm /6000 -type f -exec chmod a-s {} +

ENV PATH=/opt/autoswarm/venv/bin:$PATH \
    AUTOSWARM_STATE_DIR=/var/lib/autoswarm
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/autoswarm
ENTRYPOINT ["autoswarm"]
CMD ["--help"]
