"""Fixtures of the Python tests: a real kvtierd from the build dir under
test ($KVTIER_BUILD, default build), on a fresh temp dir, per test."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
BUILD = os.environ.get("KVTIER_BUILD") or os.path.join(ROOT, "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(ROOT, BUILD)
os.environ.setdefault("KVTIER_LIB", os.path.join(BUILD, "libkvtier.so"))


def accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Daemon:
    def __init__(self, *flags):
        self.dir = tempfile.mkdtemp(prefix="kvtier-py-", dir="/var/tmp")
        self.socket = os.path.join(self.dir, "kvtier.sock")
        self.admin = os.path.join(self.dir, "admin.sock")
        self.log = os.path.join(self.dir, "kvtierd.log")
        self.flags = [f.format(dir=self.dir) for f in flags]   # "{dir}/cold.kvt"
        self.proc = None
        self.start()

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [os.path.join(BUILD, "kvtierd"), "--socket", self.socket, "--admin-socket",
                 self.admin, "--log-level", "debug", "--hot-bytes", "64M"] + self.flags,
                stdout=log, stderr=log)
        for _ in range(500):
            if accepts(self.socket):
                return
            if self.proc.poll() is not None:
                raise RuntimeError("kvtierd exited (%d); log %s" % (self.proc.returncode, self.log))
            time.sleep(0.01)
        raise RuntimeError("kvtierd did not accept within 5 s")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def env(self):
        env = dict(os.environ, KVTIER_SOCKET=self.socket,
                   PYTHONPATH=os.path.join(ROOT, "client", "python"))
        return env


@pytest.fixture
def daemon(request):
    """kvtierd with the flags of @pytest.mark.daemon_flags (default none)."""
    mark = request.node.get_closest_marker("daemon_flags")
    d = Daemon(*(mark.args if mark else ()))
    yield d
    d.stop()
    shutil.rmtree(d.dir, ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "daemon_flags(*flags): extra kvtierd flags")


def run_python(daemon, code):
    """Run code in a new python3 process against daemon; its stdout."""
    r = subprocess.run([sys.executable, "-c", code], env=daemon.env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, "child failed:\n" + r.stdout + r.stderr
    return r.stdout
