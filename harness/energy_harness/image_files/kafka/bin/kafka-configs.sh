#!/bin/sh
# kafka-configs.sh of the apache/kafka stand-in: Kafka's ConfigCommand (users, quotas,
# dynamic configs) with the arguments as given, like Apache Kafka's script.
exec "$(dirname "$0")/kafka-run-class.sh" kafka.admin.ConfigCommand "$@"
