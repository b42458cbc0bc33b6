# bench/startup.py: `python -m bench.startup`, the gateway's time from launch to ready, and its idle RSS.
#
# Ready means the first `GET /healthz` answered 200. Each run starts a fresh process on a config with
# one provider and one model; RSS is read from /proc half a second after ready.
from __future__ import annotations

import http.client
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
[[providers]]
name = "local"
kind = "local"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "fast"
routes = [{ provider = "local", model = "m" }]
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "llm-edge.toml"
        cfg.write_text(CONFIG)
        ready, rss = [], []
        for _ in range(5):
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "--config", str(cfg), "--listen", "127.0.0.1:0"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                assert proc.stdout is not None
                port = int(proc.stdout.readline().decode().rsplit(":", 1)[1])
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                assert conn.getresponse().status == 200
                conn.close()
                ready.append(time.perf_counter() - started)
                time.sleep(0.5)
                with open(f"/proc/{proc.pid}/status") as status:
                    rss.append(int(next(line for line in status if line.startswith("VmRSS")).split()[1]) / 1024)
            finally:
                proc.terminate()
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare = time.perf_counter() - started
    print(f"startup to ready: median {statistics.median(ready) * 1000:.0f} ms (min {min(ready) * 1000:.0f} ms); "
          f"python itself: {bare * 1000:.0f} ms")  # fmt: skip
    print(f"idle RSS: median {statistics.median(rss):.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
