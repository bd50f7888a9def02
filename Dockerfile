# syntax=docker/dockerfile:1
#
# The Skillquest image: one image for every service, the service chosen by the command.
#
#   docker build -t skillquest:0.1.0 .
#   docker run --rm skillquest:0.1.0 progress     # or points, leaderboards, credits, badges,
#                                                 # gateway; `topics` runs the topic job
#
# Configuration is by environment (deploy/README.md); the image holds no secret.
# `make run` does not use this file.

# Pinned by tag and by the digest of its multi-architecture index. To move to a newer
# patch release, change both (docker buildx imagetools inspect python:<tag>).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- builder: the runtime dependencies and the Skillquest wheel, in a virtualenv ---------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, from pyproject.toml's pinned [project.dependencies] only (not the
# `local` or `dev` extras), so this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements.txt

# Then the application, built as a wheel and installed without touching the dependencies.
COPY README.md ./
COPY contracts ./contracts
COPY services ./services
COPY deploy ./deploy
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/skillquest-*.whl \
    && /opt/venv/bin/python -c 'import contracts.topics, deploy.kafka_topics, services.runtime.kafka'

# --- runtime: the virtualenv, the nameko config and the entry point; no compiler, no pip cache
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="skillquest" \
      org.opencontainers.image.description="Skillquest services (nameko): progress, points, leaderboards, credits, badges, gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SKILLQUEST_CONFIG=/app/deploy/config.yml

RUN groupadd --system --gid 10001 skillquest \
    && useradd --system --uid 10001 --gid skillquest --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin skillquest

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY deploy/config.yml /app/deploy/config.yml
COPY --chmod=0755 deploy/image/entrypoint.sh /usr/local/bin/skillquest-entrypoint

# Numeric, so that Kubernetes can check runAsNonRoot without a passwd lookup.
USER 10001:10001

# gateway 8080; progress 8101, points 8102, leaderboards 8103, credits 8104, badges 8105.
EXPOSE 8080 8101 8102 8103 8104 8105

# GET /healthz of the service this container runs (the process is up; /readyz is for
# traffic and is what the orchestrators' readiness checks use).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["skillquest-entrypoint", "healthcheck"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["skillquest-entrypoint"]
CMD ["progress"]
