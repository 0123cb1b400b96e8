# caseledger image: the installed wheel (not an editable checkout), run as a non-root user.
#
#   docker build -t caseledger .
#   docker run --rm caseledger version
#
# The entrypoint is the console script, so any subcommand can be the command:
#   docker run --rm -e CASELEDGER_KAFKA_BOOTSTRAP=host:9092 caseledger topics create

# -- build: install the package and its dependencies into a virtualenv ---------------------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY ledger/ ledger/
COPY projections/ projections/
COPY schemas/ schemas/
COPY cli/ cli/
RUN pip install --no-cache-dir '.[confluent]' \
    && caseledger version

# -- runtime: the virtualenv only, no sources, no build tools ------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 caseledger \
    && useradd --system --uid 10001 --gid caseledger --home-dir /data --shell /usr/sbin/nologin caseledger \
    && install -d -o caseledger -g caseledger /data \
    && install -d -m 0700 -o caseledger -g caseledger /keys

COPY --from=build /opt/venv /opt/venv

# The working directory is where the embedded default (caseledger.sqlite) would be written when
# CASELEDGER_DATABASE is not set; compose.yaml sets it to the PostgreSQL service.
WORKDIR /data
USER caseledger:caseledger

# No HEALTHCHECK: the ledger serves no HTTP endpoint, and `caseledger version` would only prove the
# package imports. `caseledger run` exits non-zero when a service fails, so the restart policy acts.
ENTRYPOINT ["caseledger"]
CMD ["run"]
