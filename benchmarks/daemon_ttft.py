"""Time to first token through the daemon, cold and warm: a `complete` request on a source
file (prefix ~N tokens), repeated, then with one more line typed."""
import os, subprocess, sys, tempfile, time
from localai.client import Client

root = tempfile.mkdtemp()
path = os.path.join(root, "localai.sock")
proc = subprocess.Popen([sys.executable, "-m", "localai.daemon", "--socket", path], stderr=subprocess.DEVNULL)
while not os.path.exists(path):
    time.sleep(0.05)
src = open("localai/daemon/scheduler.py").read()[:6000]
with Client(path, autostart=False) as c:
    c.call("generate", prompt="Hello", max_tokens=1)  # load the model
    rows = []
    for label, prefix in [("cold", src), ("warm (same request)", src), ("warm (one more line)", src + "    x = 1\n")]:
        t0 = time.perf_counter()
        rid = c.send("complete", {"prefix": prefix, "max_tokens": 8})
        first = None
        for ev in c.events(rid):
            if first is None:
                first = time.perf_counter()
            done = ev
        t = done.timings
        rows.append((label, t["prompt_n"], t["cache_n"], t["ttft_ms"], (first - t0) * 1000))
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.0f} | {r[4]:.0f} |")
proc.terminate(); proc.wait()
