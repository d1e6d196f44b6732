# NHR API image. Keys are never baked in: the key directory is a volume (or an HSM in production).
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml requirements.lock README.md alembic.ini ./
COPY api ./api
COPY registry ./registry
COPY security ./security
COPY cli ./cli
COPY migrations ./migrations
RUN pip install -c requirements.lock . && useradd --system --uid 10001 nhr && mkdir -p /var/lib/nhr/keyring && chown -R nhr /var/lib/nhr
USER nhr
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status == 200 else 1)"
CMD ["nhr", "serve", "--host", "0.0.0.0", "--port", "8000"]
