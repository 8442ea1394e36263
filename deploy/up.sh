#!/usr/bin/env bash
# `make up`: energy-pipeline on a local kind cluster, Grafana on http://localhost:8080/.
#
#   kind cluster (kind-config.yaml) -> ingress-nginx -> docker build + kind load of the image
#   -> helm upgrade --install of charts/energy-platform -> example EnergyPipeline Ready
#
# Idempotent: every step checks or converges (an existing cluster is reused, `helm upgrade
# --install`, `kubectl apply`), so running it twice changes nothing the second time.
# Settings (environment): KIND_CLUSTER, NAMESPACE, RELEASE, IMAGE, INGRESS_NGINX_VERSION,
# WAIT_TIMEOUT, and DRY_RUN=1 to print the commands instead of running them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIND_CLUSTER=${KIND_CLUSTER:-energy-pipeline}
NAMESPACE=${NAMESPACE:-energy}
RELEASE=${RELEASE:-energy}
IMAGE=${IMAGE:-ghcr.io/energy-pipeline/energy-pipeline:0.1.0}
INGRESS_NGINX_VERSION=${INGRESS_NGINX_VERSION:-controller-v1.13.3}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-10m}
DRY_RUN=${DRY_RUN:-0}
CONTEXT="kind-$KIND_CLUSTER"
INGRESS_MANIFEST="https://raw.githubusercontent.com/kubernetes/ingress-nginx/$INGRESS_NGINX_VERSION/deploy/static/provider/kind/deploy.yaml"

log() { printf '==> %s\n' "$*" >&2; }

run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '+ %s\n' "$*"
  else
    "$@"
  fi
}

check_prerequisites() {
  local missing=() tool
  for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if [[ ! " ${missing[*]} " =~ " docker " ]] && ! docker info >/dev/null 2>&1; then
    missing+=("a running Docker engine (docker info fails)")
  fi
  if ((${#missing[@]})); then
    {
      echo "make up needs Docker, kind, kubectl and helm. Missing here:"
      printf '  - %s\n' "${missing[@]}"
      echo "Install them (https://kind.sigs.k8s.io/docs/user/quick-start/), or run"
      echo "  make demo"
      echo "which runs the whole pipeline with local processes and no Docker."
    } >&2
    exit 1
  fi
}

ensure_cluster() {
  if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    log "kind cluster $KIND_CLUSTER exists"
  else
    log "creating kind cluster $KIND_CLUSTER (1 control plane with the ingress ports, 3 workers)"
    run kind create cluster --name "$KIND_CLUSTER" --config "$ROOT/kind-config.yaml" --wait 180s
  fi
}

ensure_ingress() {
  log "ingress-nginx $INGRESS_NGINX_VERSION (kind provider: host ports 80/443 of the ingress-ready node)"
  run kubectl --context "$CONTEXT" apply -f "$INGRESS_MANIFEST"
  run kubectl --context "$CONTEXT" -n ingress-nginx wait --for=condition=Ready pod \
    --selector=app.kubernetes.io/component=controller --timeout=300s
}

load_image() {
  log "building $IMAGE and loading it into the kind nodes"
  # The Dockerfile mounts an optional build secret (a private CA bundle): BuildKit, the
  # default builder since Docker 23, is needed; this turns it on for older engines.
  export DOCKER_BUILDKIT=1
  run docker build --tag "$IMAGE" "$ROOT"
  run kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"
}

install_chart() {
  local repository=${IMAGE%:*} tag=${IMAGE##*:}
  log "helm upgrade --install $RELEASE (namespace $NAMESPACE)"
  run helm dependency build "$ROOT/charts/energy-platform"
  run helm --kube-context "$CONTEXT" upgrade --install "$RELEASE" "$ROOT/charts/energy-platform" \
    --namespace "$NAMESPACE" --create-namespace \
    --values "$ROOT/deploy/values-kind.yaml" \
    --set "operator.image.repository=$repository" --set "operator.image.tag=$tag" \
    --wait --timeout "$WAIT_TIMEOUT"
}

wait_pipeline() {
  log "waiting for the example EnergyPipeline to be Ready (workers, topics, schema)"
  run kubectl --context "$CONTEXT" -n "$NAMESPACE" wait energypipeline/energy \
    --for=condition=Ready --timeout="$WAIT_TIMEOUT"
}

print_access() {
  local password='<run: make up>'
  if [[ $DRY_RUN != 1 ]]; then
    password=$(kubectl --context "$CONTEXT" -n "$NAMESPACE" get secret "$RELEASE-grafana-admin" \
      -o jsonpath='{.data.admin-password}' | base64 -d)
  fi
  cat <<TEXT

energy-pipeline is up.
  Grafana:  http://localhost:8080/
  Login:    admin / $password
  Pods:     kubectl --context $CONTEXT -n $NAMESPACE get pods
  Pipeline: kubectl --context $CONTEXT -n $NAMESPACE get energypipelines
  Remove:   make down
TEXT
}

main() {
  check_prerequisites
  ensure_cluster
  ensure_ingress
  load_image
  install_chart
  wait_pipeline
  print_access
}

main "$@"
