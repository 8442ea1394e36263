# One image for the operator and every worker: `energy-pipeline <command>`
# (operator, bridge, ingest, inference, train, simulate, migrate, ...).
#
#   docker build -t ghcr.io/energy-pipeline/energy-pipeline:0.1.0 .
#
# Every Python dependency installs from a binary wheel, so no stage needs a C compiler; the
# final stage holds the virtualenv, the one shared library LightGBM loads (OpenMP) and
# energy-pipeline's HiveMQ CE extension (hivemq-extension/), which the hivemq chart's init
# container copies into the broker in its secure mode (auth.extension.image).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

# The HiveMQ extension: compiled with Debian's JDK against HiveMQ's extension SDK, the jars of
# HiveMQ CE 2025.5 from Maven Central, checked against their SHA-256.
FROM ${DEBIAN_IMAGE} AS hivemq-extension
ARG HIVEMQ_EXTENSION_SDK=4.46.1
ARG HIVEMQ_EXTENSION_SDK_SHA256=355178d02dd7eab00e75612ffe8d7f0a9a41c604d622f834e47c0ed20b9b54e6
ARG SLF4J_API=2.0.17
ARG SLF4J_API_SHA256=7b751d952061954d5abfed7181c1f645d336091b679891591d63329c622eb832
ARG MAVEN_CENTRAL=https://repo1.maven.org/maven2
# Debian's slim images leave out man pages; the JDK's postinst still links into man1.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jdk-headless curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
RUN --mount=type=secret,id=pip_cert \
    ca=/etc/ssl/certs/ca-certificates.crt \
    && if [ -f /run/secrets/pip_cert ]; then ca=/run/secrets/pip_cert; fi \
    && curl -fsS --cacert "$ca" -o sdk.jar \
       "$MAVEN_CENTRAL/com/hivemq/hivemq-extension-sdk/$HIVEMQ_EXTENSION_SDK/hivemq-extension-sdk-$HIVEMQ_EXTENSION_SDK.jar" \
    && curl -fsS --cacert "$ca" -o slf4j-api.jar \
       "$MAVEN_CENTRAL/org/slf4j/slf4j-api/$SLF4J_API/slf4j-api-$SLF4J_API.jar" \
    && printf '%s  sdk.jar\n%s  slf4j-api.jar\n' "$HIVEMQ_EXTENSION_SDK_SHA256" "$SLF4J_API_SHA256" \
       | sha256sum -c -
COPY hivemq-extension ./src
RUN mkdir -p classes/META-INF/services out \
    && echo dev.energypipeline.auth.AuthMain \
       > classes/META-INF/services/com.hivemq.extension.sdk.api.ExtensionMain \
    && javac --release 17 -cp sdk.jar:slf4j-api.jar -d classes src/*.java \
    && jar cf out/auth.jar -C classes . \
    && cp src/hivemq-extension.xml out/ \
    && chmod 0644 out/*

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
COPY --from=hivemq-extension /build/out /opt/energy-pipeline/hivemq-auth-extension
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
