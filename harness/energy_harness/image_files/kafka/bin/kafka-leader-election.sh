#!/bin/sh
# kafka-leader-election.sh of the apache/kafka stand-in: Kafka's LeaderElectionCommand with the arguments as
# given, like Apache Kafka's script.
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.LeaderElectionCommand "$@"
