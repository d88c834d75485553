# The wallet ledger's image: the `wallet` CLI (init, worker roles) used by docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .

# The install carries the Avro schemas and the Alembic migrations as package data, and compiles the hot loops
# over bytes (setup.py: the Avro reader and writer, murmur2) with a C compiler that is removed again afterwards.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && cd / && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/wallet --create-home wallet

# WALLET_STATE_DIR in docker-compose.yml: the processor's RocksDB stores, on a named volume.
WORKDIR /var/lib/wallet
USER wallet

# 8080: the API (WALLET_HTTP_PORT); 6066: worker metrics (WALLET_WORKER_WEB_PORT).
EXPOSE 8080 6066
ENTRYPOINT ["wallet"]
CMD ["--help"]
