# syntax=docker/dockerfile:1
# GitOps Portal: one image for web (gunicorn), worker and beat (celery); see docker-compose.yml and
# deploy/kubernetes/. Runs as an unprivileged user; works with a read-only root filesystem when
# /tmp and /data are writable volumes.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GITOPSPORTAL_VAR_DIR=/app/var \
    GITOPSPORTAL_MIRRORS_DIR=/data/mirrors \
    GITOPSPORTAL_WORKSPACES_DIR=/data/workspaces \
    PORT=8000

# git: the portal clones, fetches and pushes GitOps repositories. tini: reaps git child processes
# and forwards SIGTERM so gunicorn and celery shut down gracefully.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 portal \
    && useradd --system --uid 10001 --gid portal --home-dir /app --shell /usr/sbin/nologin portal

WORKDIR /app

# Dependencies first (cached while only the code changes), from the lock: every distribution pinned
# and checked against its recorded hashes, so two builds of one commit install the same bytes
# (`make lock` updates the lock; README "Dependencies"). The code itself runs from /app, not installed.
COPY requirements/runtime.txt /tmp/requirements.txt
RUN pip install --require-hashes --only-binary :all: -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY --chown=portal:portal . .

# Static files are collected into the image and served by gunicorn (whitenoise). The throwaway
# secret and key exist only for this command; nothing of them is written to the image.
RUN SECRET_KEY=collectstatic-only SERVE_STATIC=true \
        GITOPSPORTAL_ENCRYPTION_KEYS="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
        python manage.py collectstatic --noinput -v0 \
    && mkdir -p /data \
    && chown -R portal:portal /app/var /data

USER 10001:10001
EXPOSE 8000
VOLUME ["/data"]

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(urllib.request.Request(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', headers={'Host': 'localhost'}), timeout=4)" || exit 1

ENTRYPOINT ["/usr/bin/tini", "--"]
# gunicorn reads WEB_CONCURRENCY (workers) and GUNICORN_CMD_ARGS; the portal logs one line per
# request itself, so gunicorn's access log stays off.
CMD ["sh", "-c", "exec gunicorn gitopsportal.wsgi:application --bind 0.0.0.0:${PORT} --worker-tmp-dir /tmp --timeout 60 --graceful-timeout 25 --keep-alive 5"]
