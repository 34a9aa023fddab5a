"""Clients that stream audio at speaking pace."""
