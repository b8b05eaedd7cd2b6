"""``python -m tests.store.kill_after CONFIG REGION K``: sync REGION, SIGKILL this process after K object writes.

The sigkill tests run it in a subprocess to prove the publish order: whatever write the process
dies after, nothing incomplete is loadable. The kill comes from the ``on_step`` callback the
library takes, so no test hook lives in library code.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from tritonops.config import load_config
from tritonops.release.pointer import publish_release
from tritonops.store.sync import SyncOptions, sync


def main(config: str, region: str, kill_after: int) -> None:
    written = 0

    def on_step(key: str) -> None:
        nonlocal written
        written += 1
        if written >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    sync(load_config(Path(config)), [region], SyncOptions(), on_step=on_step, releases=publish_release)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
