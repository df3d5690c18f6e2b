"""What a test or a tool can see of the processes it started, through /proc: names,
parents, threads, descendants, and which of them hold its memfds."""
from __future__ import annotations

import os


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("Threads:")))


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from the parent links in /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(parent_of(int(entry)), []).append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def memfds_of(pids) -> set[tuple[int, int]]:
    """(device, inode) of every misdtcp memfd these processes hold open."""
    found = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if os.readlink(path).startswith("/memfd:misdtcp"):
                    st = os.stat(path)
                    found.add((st.st_dev, st.st_ino))
            except FileNotFoundError:
                pass
    return found


def holders_of(memfds: set[tuple[int, int]]) -> set[int]:
    """Processes that still hold one of these memfds (looked up by inode: the
    memfds are the test's own, whoever holds them)."""
    holders = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except (FileNotFoundError, PermissionError):
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{entry}/fd/{fd}")
            except (FileNotFoundError, PermissionError, OSError):
                continue
            if (st.st_dev, st.st_ino) in memfds:
                holders.add(int(entry))
    return holders
