"""What a crispd may have left on the host: mounts, cgroups, processes,
files, network attachments. Each function returns a list of readable
descriptions (empty: nothing left), so a test can assert on all of them
at once and print what it found."""

import os
import subprocess
from pathlib import Path

from common.pods import alive, cgroup_hierarchies


def mounts_under(*paths):
    """Mount points (from /proc/self/mountinfo) at or below any of `paths`."""
    roots = [str(p).rstrip("/") for p in paths]
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == r or point.startswith(r + "/") for r in roots):
            out.append(f"mount {point}")
    return out


def cgroups_under(top):
    """Every cgroup directory below `top` (e.g. /crisptest-<tag>) in every
    hierarchy, with the pids still in it."""
    out = []
    for h in cgroup_hierarchies():
        root = h / top.lstrip("/")
        if not root.is_dir():
            continue
        for d, dirs, _ in os.walk(root):
            for x in dirs:
                sub = Path(d) / x
                try:
                    pids = (sub / "cgroup.procs").read_text().split()
                except OSError:
                    pids = []
                out.append(f"cgroup {sub}" + (f" (pids {' '.join(pids)})" if pids else ""))
    return out


def processes_mentioning(words, exclude=()):
    """Live processes whose command line contains any of `words`, but not
    the pids in `exclude`."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) in exclude:
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if any(w.encode() in cmd for w in words) and alive(p.name):
            text = cmd.replace(b"\0", b" ").decode(errors="replace").strip()
            found.append(f"process {p.name}: {text}")
    return found


def files_in(*dirs):
    """Entries of each directory in `dirs` (a missing directory has none)."""
    out = []
    for d in dirs:
        try:
            out.extend(f"file {e}" for e in sorted(Path(d).iterdir()))
        except FileNotFoundError:
            pass
    return out


def ip_leases(ipam_dir, prefix):
    """host-local IPAM leases of the subnet `prefix` (e.g. 10.231.7)."""
    return [f"lease {p.name}" for p in Path(ipam_dir).glob(f"{prefix}.*")]


def bridge_ports(bridge):
    """Interfaces (the pods' veths) still attached to `bridge`."""
    out = subprocess.run(["ip", "-o", "link", "show", "master", bridge], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return [f"veth {line.split(':')[1].strip()}" for line in out.stdout.splitlines() if line.strip()]
