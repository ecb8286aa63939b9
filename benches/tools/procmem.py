#!/usr/bin/env python3
"""Memory of a container runtime and its helper processes, from /proc.

    procmem.py crispd EXE MAIN_PID [RUNTIME_DIR]
        crispd (MAIN_PID) and every process running the binary EXE: its
        monitors (`crispd monitor`), the spare monitor (`crispd
        monitor-spare`) and sandbox holders (`crispd sandbox`),
        plus, apart, the containers whose parent is a monitor. A monitor
        that has exec'd the tiny monitor runs `/memfd:crispd-monitor`; it is
        ours when the container directory it holds (its argument 8 is that
        descriptor) is under RUNTIME_DIR.
    procmem.py containerd SOCKET MAIN_PID
        containerd (MAIN_PID), its shims (`containerd-shim* -address
        SOCKET`), the pause processes (a shim's child running the sandbox
        image's `/bin/sleep`) and, apart, the other children (containers).

Prints one JSON object: per group the process count, and the sums of VmRSS
(with RssAnon and RssFile), Pss and Uss (smaps_rollup) and threads, in KiB;
for crispd also where one monitor's RSS is (`monitor_breakdown_kib`).
"""
import json
import os
import sys


def status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        return None
    return out


def kib(st, key):
    v = st.get(key, "0 kB").split()
    return int(v[0]) if v else 0


def rollup(pid):
    """Pss and Uss (Private_Clean + Private_Dirty) in KiB."""
    out = {"pss": 0, "uss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == "Pss":
                    out["pss"] = int(v.split()[0])
                elif k in ("Private_Clean", "Private_Dirty"):
                    out["uss"] += int(v.split()[0])
    except OSError:
        pass
    return out


def breakdown(pid, exe_path):
    """Where one process's RSS is, in KiB: the executable's file pages
    (code, read-only data), its private copies (relocated data), shared
    libraries, stacks, and heap and other anonymous memory; and the size of
    the executable's code mapping."""
    out = {"exe_file": 0, "exe_private": 0, "libs": 0, "stack": 0, "anon": 0, "exe_code_size": 0}
    cur = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(" ", 1)[0]
                if "-" in first and ":" not in first:
                    parts = line.split()
                    cur = {"path": parts[5] if len(parts) > 5 else "", "perms": parts[1]}
                    continue
                if line.startswith("Size:") and cur["path"] == exe_path and "x" in cur["perms"]:
                    out["exe_code_size"] += int(line.split()[1])
                k, _, v = line.partition(":")
                if k in ("Rss", "Anonymous"):
                    cur[k] = int(v.split()[0])
                if k == "Anonymous":
                    path, rss, anon = cur["path"], cur.get("Rss", 0), cur["Anonymous"]
                    if path == exe_path:
                        out["exe_file"] += rss - anon
                        out["exe_private"] += anon
                    elif path.startswith("/"):
                        out["libs"] += rss
                    elif path == "[stack]":
                        out["stack"] += rss
                    else:
                        out["anon"] += rss
    except OSError:
        pass
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


TINY = "/memfd:crispd-monitor"


def tiny_monitor_of(pid, runtime_dir):
    """Whether `pid` is a tiny monitor holding a directory under runtime_dir."""
    if not runtime_dir or not exe(pid).startswith(TINY):
        return False
    args = cmdline(pid)
    try:
        held = os.readlink(f"/proc/{pid}/fd/{int(args[8])}")
    except (IndexError, ValueError, OSError):
        return False
    return held.startswith(runtime_dir.rstrip("/") + "/")


def pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


class Groups:
    def __init__(self):
        self.g = {}

    def add(self, name, pid):
        st = status(pid)
        if st is None:
            return
        g = self.g.setdefault(name, {"n": 0, "rss_kib": 0, "rss_anon_kib": 0, "rss_file_kib": 0,
                                     "pss_kib": 0, "uss_kib": 0, "threads": 0})
        r = rollup(pid)
        g["n"] += 1
        g["rss_kib"] += kib(st, "VmRSS")
        g["rss_anon_kib"] += kib(st, "RssAnon")
        g["rss_file_kib"] += kib(st, "RssFile")
        g["pss_kib"] += r["pss"]
        g["uss_kib"] += r["uss"]
        g["threads"] += int(st.get("Threads", "0"))


def ppid(pid):
    st = status(pid)
    return int(st["PPid"]) if st else 0


def main():
    kind, key, main_pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    runtime_dir = sys.argv[4] if len(sys.argv) > 4 else ""
    g = Groups()
    g.add("main", main_pid)
    all_pids = pids()
    if kind == "crispd":
        monitors = set()
        for p in all_pids:
            if p == main_pid:
                continue
            if tiny_monitor_of(p, runtime_dir):
                role = "monitor"
            elif exe(p) == key:
                args = cmdline(p)
                role = args[1] if len(args) > 1 else ""
            else:
                continue
            if role == "monitor-spare":
                # The monitor crispd keeps started ahead of need.
                g.add("spare", p)
            if role in ("monitor", "sandbox"):
                g.add(role, p)
                if role == "monitor":
                    if not monitors:
                        path = exe(p).removesuffix(" (deleted)")
                        g.g["monitor_breakdown_kib"] = breakdown(p, path)
                        g.g["monitor_kind"] = "tiny" if path == TINY else "crispd"
                    monitors.add(p)
        for p in all_pids:
            if ppid(p) in monitors and exe(p) != key and not exe(p).startswith(TINY):
                g.add("containers", p)
    else:
        shims = set()
        for p in all_pids:
            args = cmdline(p)
            if args and "containerd-shim" in os.path.basename(args[0]) and key in args:
                g.add("shim", p)
                shims.add(p)
        for p in all_pids:
            if ppid(p) in shims:
                args = cmdline(p)
                g.add("pause" if args[:1] == ["/bin/sleep"] else "containers", p)
    print(json.dumps(g.g))


if __name__ == "__main__":
    main()
