#!/bin/sh
# The `users` container of every Kafka pod: upserts the SCRAM users and their ACLs through
# this pod's broker once it answers, then again whenever the mounted users Secret changes,
# so a password rotated in the Secret replaces the old one (which then stops working)
# without a format, and a restarted pod re-applies everything. Every pod does it; the
# operations are idempotent.
#
# It logs in as the brokers' super user: this pod's certificate on the mutual-TLS INTERNAL
# listener (the SCRAM users it manages cannot lock it out). POSIX sh, as start.sh.
set -eu

: "${POD_NAME:?POD_NAME is required}"
: "${KAFKA_ADVERTISED_DOMAIN:?KAFKA_ADVERTISED_DOMAIN is required}"
: "${KAFKA_INTERNAL_PORT:?KAFKA_INTERNAL_PORT is required}"
: "${KAFKA_SASL_MECHANISM:?KAFKA_SASL_MECHANISM is required}"
: "${KAFKA_USERS:?KAFKA_USERS is required (space-separated user names)}"
KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
KAFKA_TLS_DIR=${KAFKA_TLS_DIR:-/etc/kafka/tls}
KAFKA_USERS_DIR=${KAFKA_USERS_DIR:-/etc/kafka/users}
KAFKA_ACLS_FILE=${KAFKA_ACLS_FILE:-/etc/kafka-base/acls.txt}
WORK_DIR=${WORK_DIR:-/tmp/kafka-users}
CHECK_EVERY_S=${CHECK_EVERY_S:-30}

mkdir -p "$WORK_DIR"
umask 077
. "$(dirname "$0")/admin-client.sh"
admin_client "$WORK_DIR"
admin=$WORK_DIR/admin.properties
# The pod's own name: the certificate names it, so host name verification holds.
bootstrap=$POD_NAME.$KAFKA_ADVERTISED_DOMAIN:$KAFKA_INTERNAL_PORT

log() { echo "users.sh: $*" >&2; }

stopping=false
trap 'stopping=true' TERM INT

apply() {
  for user in $KAFKA_USERS; do
    password=$(cat "$KAFKA_USERS_DIR/$user-password")
    "$KAFKA_HOME/bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --command-config "$admin" \
      --alter --entity-type users --entity-name "$user" \
      --add-config "$KAFKA_SASL_MECHANISM=[password=$password]" >/dev/null </dev/null || return 1
  done
  # One line per principal and resource set: <principal> <Op,Op...> <--topic|--group name>...,
  # e.g. "User:ingest Read,Describe --group ingest": one JVM start per line.
  # (`|| [ -n ... ]`: a last line without its newline counts too.)
  while read -r principal operations resources || [ -n "$principal" ]; do
    case $principal in '' | '#'*) continue ;; esac
    ops=""
    for op in $(echo "$operations" | tr ',' ' '); do ops="$ops --operation $op"; done
    # $ops and $resources split into words on purpose (names hold no spaces).
    # shellcheck disable=SC2086
    "$KAFKA_HOME/bin/kafka-acls.sh" --bootstrap-server "$bootstrap" --command-config "$admin" \
      --add --allow-principal "$principal" $ops $resources >/dev/null </dev/null || return 1
  done <"$KAFKA_ACLS_FILE"
}

applied=""
while ! $stopping; do
  date +%s >"$WORK_DIR/heartbeat"  # the liveness probe reads it
  # The Secret's files as mounted now (kubelet swaps them atomically on a change).
  current=$(cat "$KAFKA_USERS_DIR"/*-password | cksum)
  if [ "$current" != "$applied" ]; then
    if apply; then
      applied=$current
      touch "$WORK_DIR/applied"  # the readiness probe: this broker has its users
      log "users ($KAFKA_USERS) and ACLs applied"
    else
      log "broker not answering yet or refused; retrying in ${CHECK_EVERY_S}s"
    fi
  fi
  sleep "$CHECK_EVERY_S" &
  wait $! || true
done
