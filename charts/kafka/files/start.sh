#!/bin/sh
# Starts one Kafka node of the StatefulSet: node.id from the pod ordinal, per-node settings
# and the TLS key store appended to the chart's server.properties in a private runtime
# directory (never in a ConfigMap), storage formatted on the first start only. SCRAM users
# and ACLs are not made here: users.sh, the pod's second container, upserts them on every
# start (users bootstrapped at format time would never see a rotated password).
# POSIX sh: the official image is Alpine-based and its shell is busybox ash.
set -eu

: "${POD_NAME:?POD_NAME is required (downward API metadata.name)}"
: "${KAFKA_CLUSTER_ID:?KAFKA_CLUSTER_ID is required}"
: "${KAFKA_ADVERTISED_DOMAIN:?KAFKA_ADVERTISED_DOMAIN is required (headless Service domain)}"
KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
KAFKA_BASE_CONFIG=${KAFKA_BASE_CONFIG:-/etc/kafka-base/server.properties}
KAFKA_RUNTIME_DIR=${KAFKA_RUNTIME_DIR:-/var/run/kafka}
KAFKA_DATA_DIR=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
KAFKA_CLIENT_PORT=${KAFKA_CLIENT_PORT:-9092}
KAFKA_NODE_ID_OFFSET=${KAFKA_NODE_ID_OFFSET:-1}

# The pod-index label (set by the StatefulSet controller, Kubernetes >= 1.28), through the
# downward API; the suffix of the pod name where the label is missing.
ordinal=${POD_INDEX:-}
[ -n "$ordinal" ] || ordinal=${POD_NAME##*-}
case $ordinal in
  '' | *[!0-9]*)
    echo "start.sh: cannot tell the pod ordinal (POD_INDEX='${POD_INDEX:-}', POD_NAME='$POD_NAME')" >&2
    exit 1
    ;;
esac
node_id=$((ordinal + KAFKA_NODE_ID_OFFSET))

mkdir -p "$KAFKA_RUNTIME_DIR"
umask 077
config=$KAFKA_RUNTIME_DIR/server.properties
{
  cat "$KAFKA_BASE_CONFIG"
  echo
  echo "# Per node, written by start.sh"
  echo "node.id=$node_id"
  echo "log.dirs=$KAFKA_DATA_DIR"
  advertised="CLIENT://$POD_NAME.$KAFKA_ADVERTISED_DOMAIN:$KAFKA_CLIENT_PORT"
  # With TLS the brokers replicate over their own mutual-TLS listener.
  if [ -n "${KAFKA_INTERNAL_PORT:-}" ]; then
    advertised="$advertised,INTERNAL://$POD_NAME.$KAFKA_ADVERTISED_DOMAIN:$KAFKA_INTERNAL_PORT"
  fi
  echo "advertised.listeners=$advertised"
} >"$config"

if [ "${KAFKA_TLS_ENABLED:-false}" = true ]; then
  tls_dir=${KAFKA_TLS_DIR:-/etc/kafka/tls}
  # Kafka's PEM key store: the private key followed by its certificate chain, in one file.
  cat "$tls_dir/tls.key" "$tls_dir/tls.crt" >"$KAFKA_RUNTIME_DIR/keystore.pem"
  {
    echo "ssl.keystore.type=PEM"
    echo "ssl.keystore.location=$KAFKA_RUNTIME_DIR/keystore.pem"
    echo "ssl.truststore.type=PEM"
    echo "ssl.truststore.location=$tls_dir/ca.crt"
  } >>"$config"
fi

# An empty volume on a node of a running cluster is a lost disk: empty-volume.sh returns
# once no partition could elect this node's empty replica over its followers' data.
if [ ! -f "$KAFKA_DATA_DIR/meta.properties" ]; then
  if [ "${KAFKA_EMPTY_VOLUME_GUARD:-true}" = true ]; then
    /bin/sh "$(dirname "$0")/empty-volume.sh" "$node_id"
  else
    echo "start.sh: empty volume, and KAFKA_EMPTY_VOLUME_GUARD is off: formatting unasked" >&2
  fi
fi

# --ignore-formatted: a restarted node keeps its data; only an empty volume is formatted.
"$KAFKA_HOME/bin/kafka-storage.sh" format --cluster-id "$KAFKA_CLUSTER_ID" \
  --config "$config" --ignore-formatted

echo "start.sh: node.id=$node_id cluster.id=$KAFKA_CLUSTER_ID" >&2
exec "$KAFKA_HOME/bin/kafka-server-start.sh" "$config"
