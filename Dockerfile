FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 PORT=8000 \
    TICKER_DATABASE_URL=sqlite:////data/ticker.db

WORKDIR /app
COPY pyproject.toml README.md alembic.ini wsgi.py ./
COPY ticker ./ticker
COPY migrations ./migrations
COPY templates ./templates
RUN pip install --no-cache-dir -e . \
    && useradd --create-home --uid 10001 ticker \
    && mkdir /data && chown ticker /data

USER ticker
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=4)"
CMD ["ticker", "serve"]
