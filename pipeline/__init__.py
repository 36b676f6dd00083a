"""Incremental timm model updates without the stability gap."""
