# Stand-in for python:3.11-slim-bookworm where no registry answers: Debian's own Python 3.11
# on Debian's minimal base, with what the project's Dockerfile uses of the real image:
# `python` on PATH, the venv module with pip, and nothing else. Never shipped: the worker
# image built on it here is the same Dockerfile a user builds on the real base.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
