#!/bin/sh
# kafka-storage.sh of the apache/kafka stand-in: Kafka's StorageTool (format, info,
# random-uuid, ...) with the arguments as given, like Apache Kafka's script.
exec "$(dirname "$0")/kafka-run-class.sh" kafka.tools.StorageTool "$@"
