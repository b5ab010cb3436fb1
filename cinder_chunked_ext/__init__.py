"""Chunked backup drivers for OpenStack Cinder."""
