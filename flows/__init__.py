"""Prefect flows: the `update-model` flow and its deployments (schedule, manual run, data event)."""
