# syntax=docker/dockerfile:1
# The mesh-plane image: runtime pods (`mesh pod`), the CLI and the init/Job helpers.
#
#   docker build -t REGISTRY/mesh-plane:0.1.0 .
#   docker push REGISTRY/mesh-plane:0.1.0
#
# Two stages: the first builds a virtualenv from this repository; the final one copies only
# that virtualenv onto the same slim Python base (no compiler, no pip cache, no sources) and
# runs as an unprivileged user.

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, so editing the plane's code does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt
COPY . .
RUN pip install --no-deps . \
    && python -c "import plane.kube, plane.pod" \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:${PYTHON_VERSION}-slim
ARG UID=10001
RUN groupadd --system --gid ${UID} mesh \
    && useradd --system --uid ${UID} --gid mesh --home-dir /var/lib/mesh --no-create-home \
       --shell /usr/sbin/nologin mesh \
    && install -d -o mesh -g mesh -m 0750 /var/lib/mesh
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/mesh \
    MESH_HOST=0.0.0.0 \
    MESH_STATE_DIR=/var/lib/mesh
USER ${UID}:${UID}
WORKDIR /var/lib/mesh
# 8033: KServe V2 inference + ModelMesh management (gRPC); 2112: Prometheus metrics.
EXPOSE 8033 2112
CMD ["mesh", "pod"]
