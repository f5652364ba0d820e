# Profiles the Envoy process deciding with the module under the cached-token load (issue 34):
#   .venv/bin/python bench/profile_module.py  (after scripts/bench.sh built the release binaries)
# then: perf report -i /tmp/perf.data --no-children --sort dso,sym --stdio
import sys, subprocess, tempfile, time, threading
sys.path.insert(0, "bench")
import sidebyside as sb
from pathlib import Path
envoy = str(Path(".venv/bin/envoy").resolve())
with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    mode = [m for m in sb.ENVOY if m.name == "envoy module cached"][0]
    target, servers = mode.start(work, envoy)
    pid = servers[-1].proc.pid
    # the Envoy process is a child of `env`: find the real envoy pid
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    epid = out[0] if out else str(pid)
    t = threading.Thread(target=lambda: print(sb.run_load(target, mode, 10, closed=64)["achieved_rate"]))
    t.start(); time.sleep(2)
    subprocess.run(["perf", "record", "-F", "1999", "-g", "-p", epid, "-o", "/tmp/perf.data", "--", "sleep", "6"], capture_output=True)
    t.join()
    for s in reversed(servers): s.stop()
