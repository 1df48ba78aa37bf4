"""A Redis of a test's own that asks for a password, as an operator's does. Standard library only: the Rasa
environment's tests use it too."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from scripts.topology import free_port


@contextmanager
def redis_with_password(password: str) -> Iterator[str]:
    """A Redis of its own that requires ``password`` (loopback, nothing on disk); yields its URL, which, as
    an operator's, carries no password. The configuration goes in on stdin, not on the command line."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen([binary, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(f'port {port}\nbind 127.0.0.1\nrequirepass {password}\nsave ""\nappendonly no\n'.encode())
    proc.stdin.close()
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(f"AUTH {password}\r\nPING\r\n".encode())
                    answer = b""
                    while b"\r\n" not in answer.partition(b"\r\n")[2]:  # both replies
                        answer += conn.recv(64) or b"\r\n\r\n"
                    if b"+PONG" in answer:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)  # polling interval of a wait with a deadline
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
