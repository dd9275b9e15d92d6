# Bench Orchestrator API image.
#
# Stage 1 (builder) installs the runtime dependencies from the hashed lock
# (requirements/runtime.txt: every package pinned, pip in hash-checking mode), then
# builds the project wheel and installs it with --no-deps into a self-contained
# virtualenv at /opt/venv.
# Stage 2 (runtime) is a clean python:3.11-slim that gets only that virtualenv:
# no sources, no build tools, no dev dependencies. Both stages use the same base
# image, so the venv's interpreter symlinks stay valid after the copy.
#
# Configuration is by ORCH_* environment variables only (see app/settings.py).

FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

RUN python -m venv /opt/venv

# The locked dependencies first, in a layer of their own: it is rebuilt only when
# the lock changes, not on every code change. `make lock` regenerates the lock.
COPY requirements/runtime.txt ./requirements/
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements/runtime.txt

# Metadata first, sources second: the wheel build needs both, but keeping them
# as separate layers makes the intent clear and the diff of a code-only change small.
COPY pyproject.toml README.md ./
COPY app/ ./app/

# --no-deps: everything the wheel needs came from the lock above; `pip check`
# fails the build if pyproject.toml names a dependency that the lock lacks.
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/*.whl \
    && /opt/venv/bin/pip check


FROM python:3.11-slim AS runtime

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORCH_HOST=0.0.0.0 \
    ORCH_PORT=8000

# Unprivileged system user with a fixed UID/GID (10001), no login shell.
# /app/var is the default home of the SQLite file and tokens file (./var/...).
RUN groupadd --system --gid 10001 orchestrator \
    && useradd --system --no-log-init --uid 10001 --gid orchestrator \
        --home-dir /app --shell /usr/sbin/nologin orchestrator \
    && mkdir -p /app/var \
    && chown -R orchestrator:orchestrator /app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# slim has no curl: probe /healthz with the standard library. urlopen raises on
# a refused connection, a timeout or any non-2xx answer, so the exit code is 1 then.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

# orchestrator serve: graceful SIGTERM (in-flight requests finish, housekeeping stops).
CMD ["orchestrator", "serve", "--host", "0.0.0.0", "--port", "8000"]
