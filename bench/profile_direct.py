# Profiles `portcullis serve` under the direct cached-token load (issue 36 item 5):
#   .venv/bin/python bench/profile_direct.py  (after scripts/bench.sh built the release binaries)
# then: perf report -i /tmp/perf-direct.data --no-children --sort sym --stdio
import sys, subprocess, tempfile, time, threading
sys.path.insert(0, "bench")
import sidebyside as sb
from pathlib import Path
envoy = str(Path(".venv/bin/envoy").resolve())
with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    mode = [m for m in sb.DIRECT if m.name == "direct portcullis cached"][0]
    target, servers = mode.start(work, envoy)
    pid = servers[-1].proc.pid
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    ppid = out[0] if out else str(pid)
    t = threading.Thread(target=lambda: print(sb.run_load(target, mode, 10, closed=64)["achieved_rate"]))
    t.start(); time.sleep(2)
    subprocess.run(["perf", "record", "-F", "1999", "-g", "-p", ppid, "-o", "/tmp/perf-direct.data", "--", "sleep", "6"], capture_output=True)
    t.join()
    for s in reversed(servers): s.stop()
