"""Brokers: the embedded Tansu, the test harness, topic layout, and broker compatibility."""
