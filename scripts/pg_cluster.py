"""A throwaway PostgreSQL cluster for benchmarks: Debian's initdb and pg_ctl as the `postgres`
user (PostgreSQL refuses root), in a temporary directory, listening on a free loopback port
with trust authentication, stopped and removed when the `with` block ends, also on failure.
(The Swift tests have the same in GraftTestSupport/PostgresCluster.)"""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile

BIN = max((f"/usr/lib/postgresql/{v}/bin" for v in os.listdir("/usr/lib/postgresql") if v.isdigit()), key=lambda p: int(p.split("/")[4]))


def as_postgres(command, **kwargs):
    if os.getuid() == 0:
        command = ["runuser", "-u", "postgres", "--"] + command
    return subprocess.run(command, check=True, **kwargs)


class Cluster:
    def __init__(self, work, port):
        self.work, self.port = work, port

    def url(self, database="postgres"):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql, database="postgres"):
        result = subprocess.run([f"{BIN}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"psql: {result.stderr.strip()}")
        return result.stdout


@contextlib.contextmanager
def throwaway_cluster(settings="-c fsync=off -c shared_buffers=256MB"):
    work = tempfile.mkdtemp(prefix="graft-pg-")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = os.path.join(work, "data")
    started = False
    try:
        if os.getuid() == 0:
            shutil.chown(work, "postgres", "postgres")
        as_postgres([f"{BIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"], capture_output=True)
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={work} {settings}"
        as_postgres([f"{BIN}/pg_ctl", "-D", data, "-l", os.path.join(work, "server.log"), "-o", options, "-w", "start"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = True
        os.chmod(work, 0o755)
        yield Cluster(work, port)
    finally:
        if started:
            as_postgres([f"{BIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
