#!/bin/sh
# Run by start.sh before it formats an empty volume: `empty-volume.sh NODE_ID [--check]`.
#
# An empty volume is a new cluster's, or a node's lost disk (a new claim, a wiped or replaced
# disk). A node back from a lost disk must not start while a partition it holds a replica of
# has no leader: Kafka may then take it for that partition's last leader and elect it, and
# its followers truncate to its empty log, losing what was acknowledged (seen with Kafka
# 4.1.1: a crashed follower and the wiped only in-sync replica). Its old data is gone, so any
# live replica is the better leader: this script asks the other nodes for the partitions
# without a leader that list NODE_ID, elects a live replica of each uncleanly (with
# min.insync.replicas 2 it holds every acknowledged record), and returns once none is left.
# While a partition has no live replica at all it waits, and says which.
#
# No other node answering within KAFKA_EMPTY_VOLUME_CONTACT_S seconds: a new cluster (or
# every node down; README "Faults"), and the volume is formatted. `--check` asks once and
# changes nothing: 0 when the cluster answered and no partition with a replica on NODE_ID is
# without a leader, 3 (and those partitions as "topic partition" lines) when some are, 2 when
# no node answered.
#
# It logs in as start.sh's broker does: the node certificate on the mutual-TLS INTERNAL
# listener (the super user) with auth.tls, the client listener without. POSIX sh.
set -eu

node_id=${1:?usage: empty-volume.sh NODE_ID [--check]}
mode=${2:-wait}
: "${POD_NAME:?POD_NAME is required}"
: "${KAFKA_ADVERTISED_DOMAIN:?KAFKA_ADVERTISED_DOMAIN is required}"
KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
KAFKA_BASE_CONFIG=${KAFKA_BASE_CONFIG:-/etc/kafka-base/server.properties}
KAFKA_CLIENT_PORT=${KAFKA_CLIENT_PORT:-9092}
CONTACT_S=${KAFKA_EMPTY_VOLUME_CONTACT_S:-20}
RETRY_S=${KAFKA_EMPTY_VOLUME_RETRY_S:-10}
# The broker's heap is not needed yet (or is in use, with --check): the tools get a small one.
export KAFKA_HEAP_OPTS="-Xms32m -Xmx128m"

log() { echo "empty-volume.sh: $*" >&2; }

work=${TMPDIR:-/tmp}/kafka-empty-volume
mkdir -p "$work"
umask 077
admin=$work/admin.properties
if [ "${KAFKA_TLS_ENABLED:-false}" = true ]; then
  port=${KAFKA_INTERNAL_PORT:?KAFKA_INTERNAL_PORT is required with TLS}
  . "$(dirname "$0")/admin-client.sh"
  admin_client "$work"
else
  port=$KAFKA_CLIENT_PORT
  echo "security.protocol=PLAINTEXT" >"$admin"
fi
# Short questions: a new cluster's nodes wait for each other's answers before they start.
{
  echo "request.timeout.ms=4000"
  echo "default.api.timeout.ms=5000"
} >>"$admin"

# The other nodes: the static quorum's voters (host names the certificate names), not this one.
self=$POD_NAME.$KAFKA_ADVERTISED_DOMAIN
bootstrap=$(sed -n 's/^controller\.quorum\.voters=//p' "$KAFKA_BASE_CONFIG" | tr ',' '\n' \
  | sed 's/^[0-9]*@//; s/:[0-9]*$//' | grep -vxF "$self" | sed "s/\$/:$port/" | paste -sd, -)
if [ -z "$bootstrap" ]; then
  log "no other node in controller.quorum.voters: nothing to ask"
  [ "$mode" = --check ] && exit 2
  exit 0
fi

# The partitions with a replica on node_id that have no leader ("none") or still name node_id
# (its previous run, until its session times out), as "topic partition leader" lines.
# kafka-topics.sh prints tab-separated "Key: value" fields per partition.
unsettled_here() {
  "$KAFKA_HOME/bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --command-config "$admin" \
    --describe </dev/null >"$work/partitions" 2>"$work/error" || return 1
  awk -F'\t' -v id="$node_id" '
    /Partition: / {
      topic = ""; partition = ""; leader = ""; replicas = ""
      for (i = 1; i <= NF; i++) {
        split($i, kv, ": ")
        if (kv[1] == "Topic") topic = kv[2]
        else if (kv[1] == "Partition") partition = kv[2]
        else if (kv[1] == "Leader") leader = kv[2]
        else if (kv[1] == "Replicas") replicas = "," kv[2] ","
      }
      if (index(replicas, "," id ",") > 0 && (leader == "none" || leader == id))
        print topic, partition, leader
    }' "$work/partitions"
}

started=$(date +%s)
answered=false
while :; do
  if found=$(unsettled_here); then
    answered=true
    if [ -z "$found" ]; then
      log "the cluster answered: every partition with a replica on node $node_id has a leader" \
        "on another node"
      exit 0
    fi
    leaderless=$(echo "$found" | awk '$3 == "none" { print $1, $2 }')
    if [ "$mode" = --check ]; then
      # Asked from a running node, the partitions it leads are no news.
      [ -n "$leaderless" ] && { echo "$leaderless"; exit 3; }
      log "the cluster answered: no partition with a replica on node $node_id is without a" \
        "leader"
      exit 0
    fi
    if [ -z "$leaderless" ]; then
      log "partitions still led by node $node_id's previous run (until its session times" \
        "out): $(echo "$found" | awk '{ print $1 "-" $2 }' | paste -sd' ' -); waiting"
    else
      log "node $node_id starts on an empty volume but holds replicas of partitions without" \
        "a leader: $(echo "$leaderless" | tr ' ' '-' | paste -sd' ' -). Started now, it" \
        "could be elected and its empty log would replace the data its followers hold"
      echo "$leaderless" | awk 'BEGIN { printf "{\"partitions\": [" }
        { printf "%s{\"topic\": \"%s\", \"partition\": %s}", (NR > 1 ? ", " : ""), $1, $2 }
        END { print "]}" }' >"$work/elect.json"
      log "electing a live replica of each (unclean election: its data is all that is left)"
      "$KAFKA_HOME/bin/kafka-leader-election.sh" --bootstrap-server "$bootstrap" \
        --admin.config "$admin" --election-type UNCLEAN --path-to-json-file "$work/elect.json" \
        </dev/null >&2 2>&1 || log "not every partition has a live replica yet; waiting for" \
        "its other replicas to come back (a partition whose replicas are all lost: delete its" \
        "topic, or set emptyVolumeGuard.enabled=false to start empty anyway)"
    fi
  else
    reason=$(grep -m1 -E 'Exception|Error' "$work/error" || head -n1 "$work/error")
    if ! $answered && [ $(($(date +%s) - started)) -ge "$CONTACT_S" ]; then
      log "no other node answered in ${CONTACT_S}s ($reason): a new cluster"
      [ "$mode" = --check ] && exit 2
      exit 0
    fi
    [ "$mode" = --check ] && { log "no answer ($reason)"; exit 2; }
    if $answered; then
      log "the cluster does not answer ($reason); asking again"
    fi
    sleep 2
    continue
  fi
  sleep "$RETRY_S"
done
