# ticker: the page, the stream and the API under gunicorn (see README, "Docker").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    TICKER_DATABASE_URL=sqlite:////data/ticker.db \
    TICKER_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md alembic.ini wsgi.py gunicorn.conf.py ./
COPY ticker ./ticker
COPY migrations ./migrations
COPY templates ./templates
# The code stays owned by root: the service can write only to /data (and /tmp).
RUN pip install --no-cache-dir -e . \
    && groupadd --system --gid 10001 ticker \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin ticker \
    && mkdir /data \
    && chown 10001:10001 /data

USER 10001:10001
# The SQLite log; unused when TICKER_DATABASE_URL names PostgreSQL.
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["ticker", "serve"]
