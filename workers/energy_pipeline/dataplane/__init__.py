"""The data plane: MQTT to Kafka (bridge), Kafka to PostgreSQL (ingest), topics, admin
commands, and the forecast scheduler that runs inside ingest."""
