"""gRPC transport: the servicer, rich error statuses, health and reflection."""
