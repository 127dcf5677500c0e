"""Inside the jail (gateway/sandbox_client.py), as the job's uid: make the job API importable
and run the job's code.

argv: scratch directory, inputs directory, outputs file, then the site-packages directories to search
(the interpreter runs with -I -S, so nothing else is on the path).
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from pathlib import Path


def main() -> None:
    scratch, inputs, outputs, *site = sys.argv[1:]
    sys.path[:0] = [str(Path(__file__).parent), *site]
    import veilgate_job  # noqa: PLC0415 - only importable once the path is set

    os.chdir(scratch)  # where relative paths of the job land, with or without the launcher
    veilgate_job.configure(Path(inputs), Path(outputs))
    sys.path.insert(0, str(Path(inputs) / "job"))  # modules of an archive import each other
    try:
        runpy.run_path(str(Path(inputs) / "job" / "main.py"), run_name="__main__")
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(3)
    veilgate_job.finish()


if __name__ == "__main__":
    main()
