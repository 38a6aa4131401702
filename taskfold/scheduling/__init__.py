"""The scheduler's pure core: what it remembers beyond the fold (`Fleet`), how it picks
agents (strategies), what it decides (`decide`), and what the clock ends (`expirations`).

No faust, no Kafka, no clock: `streams/` calls these with the time and the heartbeats.
"""
