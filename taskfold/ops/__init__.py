"""What orchestrators need of every process: health, readiness and metrics over HTTP, and JSON logs."""
