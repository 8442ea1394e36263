"""How every Kafka client reaches the brokers: address, protocol and SASL credentials.

One builder for the workers (from their environment) and the operator (from the spec and
its Secrets), so both connect the same way. Pure: what a client does on top (group, acks,
timeouts) its caller adds to the returned dict.
"""

from __future__ import annotations


def client_config(
    bootstrap_servers: str,
    security_protocol: str = "PLAINTEXT",
    *,
    sasl_mechanism: str = "",
    sasl_username: str = "",
    sasl_password: str = "",
) -> dict[str, str]:
    """librdkafka's connection settings. No user name means no SASL (KAFKA_SASL_USERNAME)."""
    config = {
        "bootstrap.servers": bootstrap_servers,
        "security.protocol": security_protocol,
    }
    if sasl_username:
        config.update(
            {
                "sasl.mechanism": sasl_mechanism,
                "sasl.username": sasl_username,
                "sasl.password": sasl_password,
            }
        )
    return config
