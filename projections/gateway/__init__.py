"""The HTTP gateway: FastAPI over the projections, appending to the log (ARCHITECTURE §7)."""
