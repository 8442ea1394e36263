#!/bin/sh
# The `users` container of every Kafka pod: upserts the SCRAM users and their ACLs through
# this pod's broker once it answers, then again whenever the mounted users Secret changes,
# so a password rotated in the Secret replaces the old one (which then stops working)
# without a format, and a restarted pod re-applies everything. Every pod does it; the
# operations are idempotent.
#
# The users of KAFKA_OPTIONAL_USERS (a Kafka UI's read-only `kafka-ui`) exist while the Secret
# holds their password, and are upserted with their ACLs (KAFKA_OPTIONAL_ACLS_FILE) when it
# appears; when it goes, their SCRAM credential is deleted (their ACLs stay, inert without a
# login).
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
KAFKA_OPTIONAL_USERS=${KAFKA_OPTIONAL_USERS:-}
KAFKA_OPTIONAL_ACLS_FILE=${KAFKA_OPTIONAL_ACLS_FILE:-/etc/kafka-base/optional-acls.txt}
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

configs() {
  "$KAFKA_HOME/bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --command-config "$admin" \
    --entity-type users "$@" </dev/null
}

# One line per principal and resource set: <principal> <Op,Op...> <--topic|--group name>...,
# e.g. "User:ingest Read,Describe --group ingest": one JVM start per line, for the principals
# named in $1 only. (`|| [ -n ... ]`: a last line without its newline counts too.)
grant() {
  while read -r principal operations resources || [ -n "$principal" ]; do
    case $principal in '' | '#'*) continue ;; esac
    case " $1 " in *" ${principal#User:} "*) ;; *) continue ;; esac
    ops=""
    for op in $(echo "$operations" | tr ',' ' '); do ops="$ops --operation $op"; done
    # $ops and $resources split into words on purpose (names hold no spaces), without
    # pathname expansion: Kafka's wildcard name `*` reaches kafka-acls.sh as it is.
    ok=true
    set -f
    # shellcheck disable=SC2086
    "$KAFKA_HOME/bin/kafka-acls.sh" --bootstrap-server "$bootstrap" --command-config "$admin" \
      --add --allow-principal "$principal" $ops $resources >/dev/null </dev/null || ok=false
    set +f
    $ok || return 1
  done
}

apply() {
  optional=""
  for user in $KAFKA_OPTIONAL_USERS; do
    if [ -f "$KAFKA_USERS_DIR/$user-password" ]; then
      optional="$optional $user"
      continue
    fi
    # Not in the Secret (any more): no login. Asked first, as deleting a credential that
    # does not exist is an error.
    known=$(configs --describe --entity-name "$user") || return 1
    case $known in
      *"$KAFKA_SASL_MECHANISM"*)
        configs --alter --entity-name "$user" --delete-config "$KAFKA_SASL_MECHANISM" \
          >/dev/null || return 1
        log "user $user is not in the Secret: its login is deleted"
        ;;
    esac
  done
  for user in $KAFKA_USERS $optional; do
    password=$(cat "$KAFKA_USERS_DIR/$user-password")
    configs --alter --entity-name "$user" \
      --add-config "$KAFKA_SASL_MECHANISM=[password=$password]" >/dev/null || return 1
  done
  grant "$KAFKA_USERS" <"$KAFKA_ACLS_FILE" || return 1
  if [ -n "$optional" ]; then
    grant "$optional" <"$KAFKA_OPTIONAL_ACLS_FILE" || return 1
  fi
  applied_users="$KAFKA_USERS$optional"
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
      log "users ($applied_users) and ACLs applied"
    else
      log "broker not answering yet or refused; retrying in ${CHECK_EVERY_S}s"
    fi
  fi
  sleep "$CHECK_EVERY_S" &
  wait $! || true
done
