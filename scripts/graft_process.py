"""`graft serve` as a child process, for the Python tests and benchmarks.

It listens on 127.0.0.1 on a free port (port 0; the URL is the first line it prints) and is
stopped with SIGTERM by `stop()`, killed if it has not left within `grace` seconds. Callers stop
it in `finally` blocks or fixtures, so a failing test never leaves a server behind.
"""

from __future__ import annotations

import signal
import subprocess


class Server:
    def __init__(self, graft: str, registry: str, log: str, extra: list[str] | None = None):
        self.registry = registry
        self.log = open(log, "w")
        self.process = subprocess.Popen(
            [graft, "serve", "--registry", registry, "--listen", "127.0.0.1:0", *(extra or [])],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"graft serve did not start: {line!r}")
        self.url = line.split("listening on ")[1].split(" ")[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self, grace: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
