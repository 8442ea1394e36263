"""Sensor simulator: realistic, reproducible building signals published over MQTT."""
