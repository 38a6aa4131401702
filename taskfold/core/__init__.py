"""The pure core: events, the fold, scheduling decisions and the builders of what gets appended (no I/O, no clock)."""
