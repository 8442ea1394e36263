# One image for the operator and every worker: `energy-pipeline <command>`
# (operator, bridge, ingest, inference, train, simulate, migrate, ...).
#
#   docker build -t ghcr.io/energy-pipeline/energy-pipeline:0.1.0 .
#
# Every dependency installs from a binary wheel, so no stage needs a compiler; the
# final stage holds the virtualenv and the one shared library LightGBM loads (OpenMP).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies first, in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
# A machine whose HTTPS goes through its own CA hands the bundle in as a build secret
# (docker build --secret id=pip_cert,src=FILE): mounted for this step only, in no layer.
RUN --mount=type=secret,id=pip_cert \
    if [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && mkdir -p workers/energy_pipeline operator/energy_operator \
    && touch workers/energy_pipeline/__init__.py operator/energy_operator/__init__.py \
    && pip install . \
    && pip uninstall -y energy-pipeline
COPY workers ./workers
COPY operator ./operator
COPY proto ./proto
# pip fetches the build backend (setuptools) for this step too.
RUN --mount=type=secret,id=pip_cert \
    if [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install --no-deps .

FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HTTP_PORT=8080
# Every command's module imports here (--help loads them all, LightGBM's OpenMP included).
RUN energy-pipeline --help >/dev/null
# The charts and the operator run it as this user (runAsNonRoot, uid 10001).
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["energy-pipeline"]
CMD ["--help"]
