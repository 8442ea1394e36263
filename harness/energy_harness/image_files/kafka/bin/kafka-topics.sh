#!/bin/sh
# kafka-topics.sh of the apache/kafka stand-in: Kafka's TopicCommand with the arguments as
# given, like Apache Kafka's script.
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.TopicCommand "$@"
