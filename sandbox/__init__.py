"""Runs approved analysis code next to the data, isolated; speaks JSON files with the gateway.

Not imported by `gateway/`: the gateway starts `python -m sandbox.launch REQUEST.json` inside
new network, mount and PID namespaces, and reads the outputs file the job leaves behind.
"""

PROTOCOL = 1
