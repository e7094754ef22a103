"""The HTTP API: POP resources and services, the event feed, operations endpoints."""
