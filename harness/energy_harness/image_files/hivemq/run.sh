#!/usr/bin/env bash
# Starts HiveMQ CE 2025.5 from Maven Central's jars: the broker (the artifact
# hivemq-community-edition-embedded) as bin/hivemq.jar and its dependencies in lib/, where
# the official image's bin/run.sh runs one shaded bin/hivemq.jar with `java -jar`. What the official script adds is kept:
# JAVA_OPTS from the environment first, hivemq.home, the module openings HiveMQ's netty
# and persistence need, English messages, a crash with a heap dump in the home folder on
# OutOfMemoryError. Not kept: its remote JMX port (9010), which the chart does not use.
set -eo pipefail

HIVEMQ_HOME="${HIVEMQ_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

# The official script refuses a home folder the user cannot write; so does this one, so a
# pod security context that would stop the official image stops the stand-in too.
if [[ ! -w "$HIVEMQ_HOME" ]]; then
    echo "ERROR: $HIVEMQ_HOME is not writable for uid $(id -u), groups $(id -G)" >&2
    exit 1
fi

HEAP_DUMPS="${HIVEMQ_HEAPDUMP_FOLDER:-$HIVEMQ_HOME}"
JAVA_OPTS="${JAVA_OPTS:-} -Djava.net.preferIPv4Stack=true"
JAVA_OPTS="$JAVA_OPTS --add-opens java.base/java.lang=ALL-UNNAMED"
JAVA_OPTS="$JAVA_OPTS --add-opens java.base/java.nio=ALL-UNNAMED"
JAVA_OPTS="$JAVA_OPTS --add-opens java.base/sun.nio.ch=ALL-UNNAMED"
JAVA_OPTS="$JAVA_OPTS --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED"
JAVA_OPTS="$JAVA_OPTS --add-exports java.base/jdk.internal.misc=ALL-UNNAMED"
JAVA_OPTS="$JAVA_OPTS -Djava.security.egd=file:/dev/./urandom"
JAVA_OPTS="$JAVA_OPTS -Duser.language=en -Duser.region=US"
JAVA_OPTS="$JAVA_OPTS -XX:+CrashOnOutOfMemoryError -XX:+HeapDumpOnOutOfMemoryError"

echo "HIVEMQ_HOME: $HIVEMQ_HOME"
echo "JAVA_OPTS: $JAVA_OPTS"

# JAVA_OPTS is split into words on purpose: it holds several options.
# shellcheck disable=SC2086
exec java "-Dhivemq.home=$HIVEMQ_HOME" \
    "-XX:HeapDumpPath=$HEAP_DUMPS/heap-dump.hprof" "-XX:ErrorFile=$HEAP_DUMPS/hs_err_pid%p.log" \
    $JAVA_OPTS -cp "$HIVEMQ_HOME/bin/hivemq.jar:$HIVEMQ_HOME/lib/*" com.hivemq.HiveMQServer
