"""The write side (ARCHITECTURE §5): the scheduler as a faust-streaming app.

`app.build` wires the topology (tests call it too), `processor` and `scheduler` hold the
logic without faust, `rows` is the table's row format, `run` starts workers.
"""
