"""Clients that upload a whole recording at once."""
