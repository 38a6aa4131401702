"""The pure core: events, the fold, scheduling decisions and the builders of what gets appended.

No I/O and no clock, but for `edge.py`: the one module that reads the wall clock, the user
and the payload setting, which the builders take as default arguments.
"""
