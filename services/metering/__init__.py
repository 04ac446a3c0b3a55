"""Metering: usage ingestion (Kafka and HTTP), validation, durable dedup, deductions, usage reports."""
