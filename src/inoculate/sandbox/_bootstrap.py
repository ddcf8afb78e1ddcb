"""Run inside the sandbox as its first process (PID 1 of the run's PID namespace), by `python -I -c`.

argv[1] is a JSON spec: {"python", "rlimits": {NAME: value}, "tmpfs": [paths], "program": file name}.
It mounts fresh tmpfs over the shared writable places (it is root of a new user + mount namespace), forks
the program with the rlimits set, reaps every process until the program exits, and exits with the
program's status (128 + N for signal N). When it exits the kernel kills whatever is left in the namespace.
Standard library only: it runs before anything else and must not import inoculate.
"""

import ctypes
import json
import os
import resource
import sys


def _mount_tmpfs(paths):
    """Fresh tmpfs over each path; the working folder (under one of them) is bound back at its own path."""
    libc = ctypes.CDLL(None, use_errno=True)
    ms_bind, ms_rec, ms_private, ms_nosuid, ms_nodev = 4096, 0x4000, 1 << 18, 2, 4
    if libc.mount(b"none", b"/", None, ms_rec | ms_private, None) != 0:
        return
    work = os.getcwd()
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    for path in paths:
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        if libc.mount(b"tmpfs", path.encode(), b"tmpfs", ms_nosuid | ms_nodev, b"size=64m,mode=1777") != 0:
            continue
        if work == path or work.startswith(path.rstrip("/") + "/"):
            os.makedirs(work, exist_ok=True)
            source = f"/proc/self/fd/{fd}"
            if libc.mount(source.encode(), work.encode(), None, ms_bind, None) != 0:
                libc.umount2(path.encode(), 2)  # MNT_DETACH: keep the working folder reachable
    os.chdir(work)
    os.close(fd)


def main():
    spec = json.loads(sys.argv[1])
    if spec.get("tmpfs"):
        _mount_tmpfs(spec["tmpfs"])
    pid = os.fork()
    if pid == 0:
        try:
            for name, value in spec["rlimits"].items():
                resource.setrlimit(getattr(resource, name), (value, value))
            os.execve(spec["python"], [spec["python"], "-I", spec["program"]], {})
        finally:
            os._exit(127)
    while True:
        try:
            got, status = os.wait()
        except ChildProcessError:
            os._exit(127)
        if got == pid:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


main()
