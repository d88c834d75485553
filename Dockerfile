# The wallet ledger's image: the `wallet` CLI (init, worker roles) used by docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .

# `pip install .` installs the Python packages only. The code finds alembic.ini, migrations/ and schemas/
# beside its packages (REPO_ROOT in app/settings.py, SCHEMA_DIR in app/codec.py), so they are copied there.
# REPO_ROOT is printed from outside /src, or Python would import the source tree instead of the install.
RUN pip install . \
    && repo_root="$(cd / && python -c 'from app.settings import REPO_ROOT; print(REPO_ROOT)')" \
    && cp -r alembic.ini migrations schemas "$repo_root"/ \
    && cd / && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/wallet --create-home wallet

# WALLET_STATE_DIR in docker-compose.yml: the processor's RocksDB stores, on a named volume.
WORKDIR /var/lib/wallet
USER wallet

# 8080: the API (WALLET_HTTP_PORT); 6066: worker metrics (WALLET_WORKER_WEB_PORT).
EXPOSE 8080 6066
ENTRYPOINT ["wallet"]
CMD ["--help"]
