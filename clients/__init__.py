"""Clients of the appliance: the Python SDK (clients.sdk) and the file CLIs
(python -m clients.realtime.file, python -m clients.batch.file)."""

from clients.sdk import SttClient, SttError, TimedResult

__all__ = ["SttClient", "SttError", "TimedResult"]
