# syntax=docker/dockerfile:1
#
# Counterpoint runtime image. One image serves every role; the command picks it:
#
#   docker build -t counterpoint .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=broker:9092 counterpoint topics
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=broker:9092 counterpoint agent billing
#
# Each container runs exactly one process (`counterpoint agent NAME`); scale an agent by
# running more containers of it (see docker-compose.yml).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the distribution from the build context (the repository minus .dockerignore), then
# drop the sources: the image runs the installed package. Which folders are packages is
# pyproject.toml's to say, so a new package needs no line here.
WORKDIR /tmp/counterpoint-src
COPY . .
RUN pip install . \
    && cd / \
    && rm -rf /tmp/counterpoint-src

# Non-root user whose home is the writable state folder (small SQLite file, local trace files).
# /data/keys exists in the image so that a named volume mounted there starts owned by that user
# (Docker copies a mount point's owner and mode into a new, empty volume).
RUN groupadd --system --gid 10001 counterpoint \
    && useradd --system --uid 10001 --gid counterpoint --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin counterpoint \
    && mkdir -p /data /data/memory /data/keys \
    && chown counterpoint:counterpoint /data /data/memory /data/keys \
    && chmod 0700 /data/keys

ENV COUNTERPOINT_HOME=/data \
    HOME=/data
WORKDIR /data

# Numeric so that orchestrators enforcing runAsNonRoot can verify it.
USER 10001:10001

ENTRYPOINT ["counterpoint"]
CMD ["--help"]
