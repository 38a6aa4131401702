"""Brokers: the embedded Tansu, the test harness, topic layout, client settings per broker and Tansu's fixes."""
