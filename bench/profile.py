#!/usr/bin/env python3
"""Profiles the process under test of one side-by-side mode (bench/sidebyside.py) with `perf`:
  .venv/bin/python bench/profile.py "envoy module cached"       # issue 34: Envoy with the module
  .venv/bin/python bench/profile.py "direct portcullis cached"  # issue 36: portcullis serve
after scripts/bench.sh built the release binaries; then
  perf report -i /tmp/perf.data --no-children --sort dso,sym --stdio
The generator runs 10 s (64 in flight); perf records the server for 6 s of it.
"""
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sidebyside as sb  # noqa: E402


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "envoy module cached"
    mode = next(m for m in sb.DIRECT + sb.ENVOY if m.name == name)
    envoy = str((sb.ROOT / ".venv/bin/envoy").resolve())
    with tempfile.TemporaryDirectory() as tmp:
        target, servers = mode.start(Path(tmp), envoy)
        # The server runs under `env` (Envoy) or a wrapper: profile the real process.
        pid = servers[-1].proc.pid
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pid = children[0] if children else str(pid)
        load = threading.Thread(target=lambda: print(sb.run_load(target, mode, 10, closed=64)["achieved_rate"]))
        load.start()
        time.sleep(2)
        subprocess.run(["perf", "record", "-F", "1999", "-g", "-p", pid, "-o", "/tmp/perf.data", "--", "sleep", "6"],
                       capture_output=True)
        load.join()
        for server in reversed(servers):
            server.stop()


if __name__ == "__main__":
    main()
