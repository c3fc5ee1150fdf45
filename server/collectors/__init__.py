"""Collectors: read the datastores and return the models procedures answer with."""
