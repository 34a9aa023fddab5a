"""Observability: metrics, health and log sinks (the opt-in transcript sink lives in `transcripts`)."""
