"""Per-stream streaming logic: endpointing, the commit policy, text guards and the orchestrator."""
