"""Prometheus metrics and health checks of one app."""
