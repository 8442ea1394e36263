#!/usr/bin/env bash
# `make down`: delete the kind cluster of `make up`, with everything in it. Idempotent: a
# cluster that does not exist is nothing to do.
set -euo pipefail

KIND_CLUSTER=${KIND_CLUSTER:-energy-pipeline}

if ! command -v kind >/dev/null 2>&1; then
  echo "make down needs kind (nothing to delete without it)." >&2
  exit 1
fi
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  kind delete cluster --name "$KIND_CLUSTER"
else
  echo "kind cluster $KIND_CLUSTER does not exist: nothing to do." >&2
fi
