"""LEO Activation: idempotent Kafka consumers projecting marketing activation into PostgreSQL."""

__version__ = "0.1.0"
