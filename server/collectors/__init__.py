"""Collectors: read the watched systems (Redis here) and return the models procedures serve."""
