"""Runs approved analysis code next to the data, isolated; speaks JSON files with the gateway.

Not imported by `gateway/`: `veilgate worker` starts `harness.py` inside a bubblewrap jail
(gateway/sandbox_client.py), and reads the outputs file the job leaves behind.
"""

PROTOCOL = 1
