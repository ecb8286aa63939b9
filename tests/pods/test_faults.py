"""crispd killed at any instant (fault injection).

Each cycle runs a few pod + container lifecycles at once (PullImage,
RunPodSandbox, CreateContainer, StartContainer, ExecSync, StopContainer,
RemoveContainer, StopPodSandbox, RemovePodSandbox) while crispd is
SIGKILLed at a random point: when a randomly chosen call of the cycle has
been sent, plus a random delay. crispd is started again (sometimes killed
once more while it restores, and started again), then the test does what
kubelet does: it retries what failed (finding by name what a lost answer
had made), finishes every lifecycle and so removes everything.

Checked after every restart: every call that was answered OK is durable
(a pod or container created is there unless its removal was answered,
one started is not CREATED, one stopped is EXITED or NOTREADY, one removed
is gone), no record is torn, every container belongs to a listed pod.
Checked at the end of every cycle: nothing of crispd's is left: no mount
under its directories, no cgroup, no holder, monitor or container
process, no file under its directories, no IP lease and no veth.

`CRISP_FAULT_SEED` repeats a run's choices (the seed is printed, and named
in every failure; timing still differs), `CRISP_FAULT_CYCLES` sets the
number of cycles (20 by default), `CRISP_FAULT_LIVES` the lifecycles per
cycle (3).

Then single faults: a pod's sandbox holder killed, a container's monitor
killed (crispd running, or down at the time), a CNI plugin that hangs, a
StopContainer waiting out a long grace period across a restart, and a
stray `crisp-<id>` cgroup with a process in it below a pod's cgroup."""

import collections
import json
import os
import random
import subprocess
import sys
import threading
import time

import grpc
import pytest

from common import leftovers
from common.pods import Cri, alive, cgroup_hierarchies, create
from common.wait import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")

STEPS = ["pull", "runp", "create", "start", "exec", "stopc", "rmc", "stopp", "rmp"]

# sh as the container's PID 1 ignores SIGTERM unless it traps it.
SCRIPT = "trap 'exit 0' TERM; busybox sleep 1000 & wait"


class Life:
    """One pod + container lifecycle and what crispd answered."""

    def __init__(self, name, index):
        self.name = name
        self.index = index
        self.pod = None
        self.cfg = None
        self.ctr = None
        self.ok = set()
        self.failed = None  # (step, status) of the call the kill broke
        self.early = None  # an error before the kill: a real failure

    def pid_mode(self, pb):
        """A PID namespace per container, or (every other pod) one the
        pod's holder and containers share."""
        return pb.POD if self.index % 2 else pb.CONTAINER

    def __repr__(self):
        return f"{self.name}(pod={self.pod and self.pod[:12]}, ctr={self.ctr and self.ctr[:12]}, ok={sorted(self.ok, key=STEPS.index)}, failed={self.failed})"


class Run:
    """A crispd under fault injection, and the client of its current
    incarnation."""

    def __init__(self, d, cri, registry, logs, seed):
        self.d, self.cri, self.registry, self.logs, self.seed = d, cri, registry, logs, seed
        self.pb = d.client.pb
        self.log_offset = 0

    @property
    def client(self):
        return self.d.client

    def restart(self):
        self.d.client.close()
        self.d.start()
        self.d.client = Cri(self.d, self.cri)

        # Until the new crispd has replaced the socket, a child the killed
        # one forked (not yet exec'd) may still hold the old listener: a
        # connection there is reset. kubelet retries; so does this.
        def answers():
            try:
                self.client.rt.Version(self.pb.VersionRequest(), timeout=10)
                return True
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return False

        wait_until("crispd's first answer", answers)

    def new_log(self):
        """What crispd logged since the last call."""
        text = self.d.log_path.read_bytes()[self.log_offset :].decode(errors="replace")
        self.log_offset += len(text.encode())
        return text

    # ---- the calls of one lifecycle -----------------------------------

    def call(self, life, step):
        c, pb = self.client, self.pb
        if step == "pull":
            c.pull(self.registry.busybox)
        elif step == "runp":
            pod, cfg = c.runp(life.name, log_directory=str(self.logs / life.name), pid=life.pid_mode(pb))
            life.pod, life.cfg = pod, cfg
        elif step == "create":
            def tweak(cfg):
                # As kubelet: the pod's PID namespace mode.
                cfg.linux.security_context.namespace_options.pid = life.pid_mode(pb)

            life.ctr = create(c, life.pod, life.cfg, "c", self.registry.busybox, ["/bin/sh", "-c", SCRIPT], log_path="c.log", tweak=tweak)
        elif step == "start":
            c.rt.StartContainer(pb.StartContainerRequest(container_id=life.ctr), timeout=60)
        elif step == "exec":
            r = c.rt.ExecSync(pb.ExecSyncRequest(container_id=life.ctr, cmd=["/bin/sh", "-c", "echo hi"], timeout=30), timeout=60)
            assert (r.exit_code, r.stdout) == (0, b"hi\n"), r
        elif step == "stopc":
            c.rt.StopContainer(pb.StopContainerRequest(container_id=life.ctr, timeout=10), timeout=60)
        elif step == "rmc":
            c.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=life.ctr), timeout=60)
        elif step == "stopp":
            c.stopp(life.pod)
        elif step == "rmp":
            c.rmp(life.pod)
        life.ok.add(step)

    # ---- kubelet after a restart --------------------------------------

    def find_pod(self, life):
        """The pod named `life.name`, as kubelet finds it by its metadata."""
        for p in self.client.rt.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=10).items:
            if p.metadata.name == life.name:
                return p
        return None

    def find_ctr(self, life):
        req = self.pb.ListContainersRequest(filter=self.pb.ContainerFilter(pod_sandbox_id=life.pod))
        for c in self.client.rt.ListContainers(req, timeout=10).containers:
            if c.metadata.name == "c":
                return c
        return None

    def resume(self, life, step):
        """Retry `step`, which failed (or never ran), as kubelet would."""
        pb, c = self.pb, self.client
        if step == "runp" and life.pod is None:
            found = self.find_pod(life)
            if found is None:
                return self.call(life, "runp")
            life.pod = found.id
            life.cfg = c.pod_config(life.name, log_directory=str(self.logs / life.name), pid=life.pid_mode(pb))
            if found.state != pb.SANDBOX_READY:
                # kubelet kills a sandbox that is not ready and makes another.
                c.stopp(life.pod)
                c.rmp(life.pod)
                life.pod = None
                return self.call(life, "runp")
            return
        if step == "create" and life.ctr is None:
            found = self.find_ctr(life)
            if found is None:
                return self.call(life, "create")
            life.ctr = found.id
            return
        if step == "start":
            st = c.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=life.ctr), timeout=10).status
            if st.state == pb.CONTAINER_CREATED:
                self.call(life, "start")
            return
        if step == "exec":
            st = c.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=life.ctr), timeout=10).status
            if st.state == pb.CONTAINER_RUNNING:
                self.call(life, "exec")
            return
        self.call(life, step)

    def finish(self, life):
        start = STEPS.index(life.failed[0]) if life.failed else len(STEPS)
        for step in STEPS[start:]:
            if step in ("create", "start", "exec", "stopc", "rmc") and life.pod is None:
                continue
            if step in ("start", "exec", "stopc", "rmc") and life.ctr is None:
                continue
            self.resume(life, step)

    # ---- checks --------------------------------------------------------

    def check_durable(self, lives, where):
        pb = self.pb
        pods = {p.id: p for p in self.client.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items}
        ctrs = {c.id: c for c in self.client.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers}
        bad = []
        for life in lives:
            # The call the kill broke may or may not have taken effect.
            tried = life.ok | ({life.failed[0]} if life.failed else set())
            if "runp" in life.ok:
                if "rmp" in life.ok and life.pod in pods:
                    bad.append(f"{life}: pod removed (answered OK) but listed")
                if "rmp" not in tried and life.pod not in pods:
                    bad.append(f"{life}: pod created (answered OK) but not listed")
                if "stopp" in life.ok and life.pod in pods and pods[life.pod].state != pb.SANDBOX_NOTREADY:
                    bad.append(f"{life}: pod stopped (answered OK) but {pb.PodSandboxState.Name(pods[life.pod].state)}")
            if "create" in life.ok:
                if {"rmc", "rmp"} & life.ok and life.ctr in ctrs:
                    bad.append(f"{life}: container removed (answered OK) but listed")
                if not {"rmc", "rmp"} & tried and life.ctr not in ctrs:
                    bad.append(f"{life}: container created (answered OK) but not listed")
                st = ctrs.get(life.ctr)
                if st is not None and "start" in life.ok and st.state == pb.CONTAINER_CREATED:
                    bad.append(f"{life}: container started (answered OK) but CREATED")
                if st is not None and "stopc" in life.ok and st.state != pb.CONTAINER_EXITED:
                    bad.append(f"{life}: container stopped (answered OK) but {pb.ContainerState.Name(st.state)}")
            if "pull" in life.ok:
                img = self.client.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=self.registry.busybox)), timeout=10)
                if not img.image.id:
                    bad.append(f"{life}: image pulled (answered OK) but unknown")
        for c in ctrs.values():
            if c.pod_sandbox_id not in pods:
                bad.append(f"container {c.id} listed without its pod {c.pod_sandbox_id}")
        log = self.new_log()
        for word in ("cannot read record", "cannot decode record", "skipped pod sandbox", "skipped container"):
            if word in log:
                bad.append(f"crispd's log: {word}: " + next(line for line in log.splitlines() if word in line))
        assert not bad, f"{where}: " + "\n".join(bad)

    def left_behind(self, network):
        d = self.d
        found = []
        found += self.listed()
        found += leftovers.mounts_under(d.runtime_dir, d.root)
        found += leftovers.cgroups_under(f"/crisptest-{d.tag}")
        exclude = {d.proc.pid} if d.proc else set()
        found += [p for p in leftovers.processes_mentioning([f"crisptest-{d.tag}", str(d.runtime_dir), str(self.logs)], exclude) if "monitor-spare" not in p]
        found += leftovers.files_in(
            d.runtime_dir / "pods",
            d.runtime_dir / "containers",
            d.state_dir / "containers",
            d.state_dir / "cri" / "net",
        )
        found += [f for f in leftovers.files_in(d.state_dir / "cri") if "/pod-" in f or "/container-" in f]
        found += leftovers.ip_leases(network.ipam_dir, network.prefix)
        found += leftovers.bridge_ports(network.bridge)
        return found

    def listed(self):
        pb = self.pb
        out = [f"pod {p.id} ({p.metadata.name})" for p in self.client.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items]
        out += [f"container {c.id}" for c in self.client.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers]
        return out


def run_cycle(run, rng, cycle, lives_per_cycle):
    """One cycle: lifecycles, a kill at a random call, a restart (and
    maybe another kill while it restores), then kubelet's retries."""
    lives = [Life(f"f{cycle}-{i}", i) for i in range(lives_per_cycle)]
    kill_at_call = rng.randrange(len(STEPS) * lives_per_cycle + 1)
    kill_delay = rng.uniform(0, 0.08)
    killed = threading.Event()
    trigger = threading.Event()
    sent = [0]
    lock = threading.Lock()

    def worker(life):
        for step in STEPS:
            with lock:
                sent[0] += 1
                if sent[0] > kill_at_call:
                    trigger.set()
            try:
                run.call(life, step)
            except grpc.RpcError as e:
                if killed.is_set():
                    life.failed = (step, e.code().name)
                else:
                    life.early = (step, e.code().name, e.details())
                    life.failed = (step, e.code().name)
                return

    threads = [threading.Thread(target=worker, args=(life,)) for life in lives]
    for t in threads:
        t.start()
    # All calls sent without reaching the chosen one: the kill comes
    # after the last (crispd idle, or still finishing work).
    while not trigger.wait(0.01):
        if not any(t.is_alive() for t in threads):
            break
    time.sleep(kill_delay)
    killed.set()
    run.d.kill()
    for t in threads:
        t.join()
    where = f"seed {run.seed} cycle {cycle} (kill after call {kill_at_call} + {kill_delay * 1000:.0f} ms)"
    early = [f"{life.name}: {life.early}" for life in lives if life.early]
    assert not early, f"{where}: calls failed before the kill: {early}"

    run.restart()
    if rng.random() < 0.2:
        # Killed again while it restores and reclaims.
        time.sleep(rng.uniform(0, 0.05))
        run.d.kill()
        run.restart()
    run.check_durable(lives, where)
    for life in lives:
        run.finish(life)
    run.check_durable(lives, where + ", after the retries")
    return lives, where


def test_crispd_killed_at_any_instant(make_crispd, cri, registry, network, tmp_path):
    seed = int(os.environ.get("CRISP_FAULT_SEED") or random.randrange(1 << 32))
    cycles = int(os.environ.get("CRISP_FAULT_CYCLES", "20"))
    lives_per_cycle = int(os.environ.get("CRISP_FAULT_LIVES", "3"))
    print(f"\nCRISP_FAULT_SEED={seed} CRISP_FAULT_CYCLES={cycles} CRISP_FAULT_LIVES={lives_per_cycle}")
    rng = random.Random(seed)
    d = make_crispd()
    logs = tmp_path / "logs"
    run = Run(d, cri, registry, logs, seed)
    d.client.pull(registry.busybox)
    broken = collections.Counter()
    for cycle in range(cycles):
        lives, where = run_cycle(run, rng, cycle, lives_per_cycle)
        left = run.left_behind(network)
        print(f"cycle {cycle}: {', '.join(f'{life.name} broke at {life.failed[0]}' for life in lives if life.failed) or 'kill after the last call'}")
        assert not left, f"{where}: left behind after every pod was removed:\n" + "\n".join(left) + "\n" + "\n".join(map(repr, lives))
        broken.update(life.failed[0] for life in lives if life.failed)
    print(f"calls broken by the kill, by step: {dict(broken)}")


# ------------------------------------------------ a holder or monitor killed


def running(d, registry, tmp_path, name):
    """A pod with one started container: (pod, container, the container's
    host pid, the holder's pid)."""
    c, pb = d.client, d.client.pb
    c.pull(registry.busybox)
    pod, cfg = c.runp(name, log_directory=str(tmp_path / "logs" / name))
    ctr = c.create(pod, cfg, "c", registry.busybox, ["/bin/sh", "-c", SCRIPT], log_path="c.log")
    c.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)
    verbose = c.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True), timeout=10)
    pid = int(verbose.info["info"].split('"pid":')[1].split(",")[0].strip())
    holder = int((d.runtime_dir / "pods" / pod / "sandbox.json").read_text().split('"pid":')[1].split(",")[0])
    return pod, ctr, pid, holder


def ctr_status(d, ctr):
    return d.client.rt.ContainerStatus(d.client.pb.ContainerStatusRequest(container_id=ctr), timeout=10).status


def nothing_left(d, network, logs):
    run = Run(d, None, None, logs, None)
    return run.left_behind(network)


@pytest.mark.parametrize("when", ["running", "down"])
def test_a_killed_holder_makes_the_pod_notready_and_stops_its_containers(make_crispd, cri, registry, network, tmp_path, when):
    d = make_crispd()
    pb = d.client.pb
    pod, ctr, pid, holder = running(d, registry, tmp_path, "lost-holder")
    if when == "down":
        d.kill()
    os.kill(holder, 9)
    if when == "down":
        wait_until("the holder's end", lambda: not alive(holder))
        Run(d, cri, registry, tmp_path, None).restart()
    wait_until("pod NOTREADY", lambda: d.client.podstatus(pod).state == pb.SANDBOX_NOTREADY)
    st = wait_until("container EXITED", lambda: (s := ctr_status(d, ctr)).state == pb.CONTAINER_EXITED and s)
    assert not alive(pid), "the container's process outlived its pod's holder"
    assert st.finished_at > 0
    d.client.rmp(pod)
    assert nothing_left(d, network, tmp_path / "logs") == []


def monitor_of(ctr):
    """The pid of the container's monitor: the one process naming it."""
    found = [int(p.split()[1].rstrip(":")) for p in leftovers.processes_mentioning([ctr])]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("when", ["running", "down"])
def test_a_killed_monitor_reports_the_exit_unknown_and_the_pod_goes(make_crispd, cri, registry, network, tmp_path, when):
    d = make_crispd()
    pb = d.client.pb
    pod, ctr, pid, _ = running(d, registry, tmp_path, "lost-monitor")
    monitor = monitor_of(ctr)
    if when == "down":
        d.kill()
    os.kill(monitor, 9)
    wait_until("the monitor's end", lambda: not alive(monitor))
    if when == "down":
        Run(d, cri, registry, tmp_path, None).restart()
    st = wait_until("container EXITED", lambda: (s := ctr_status(d, ctr)).state == pb.CONTAINER_EXITED and s)
    # Nobody saw its end: an unknown exit, said so.
    assert (st.exit_code, st.reason) == (255, "Unknown"), st
    # Unwatched, it does not run on.
    wait_until("the container's end", lambda: not alive(pid))
    d.client.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr), timeout=60)
    d.client.rmp(pod)
    assert nothing_left(d, network, tmp_path / "logs") == []


# ------------------------------------------------ slow plugins, long stops


HANG_PLUGIN = """#!{python}
# A CNI plugin for the tests: while {flag} exists, ADD never finishes;
# otherwise it passes its previous result on. DEL does nothing.
import json, os, sys, time
conf = json.load(sys.stdin)
if os.environ.get("CNI_COMMAND") == "ADD":
    while os.path.exists({flag!r}):
        time.sleep(1)
    print(json.dumps(conf.get("prevResult") or {{"cniVersion": conf["cniVersion"]}}))
"""


def test_a_hanging_cni_plugin_times_out_and_the_name_is_free_again(make_crispd, network, tmp_path):
    bin_dir = tmp_path / "cni-bin"
    bin_dir.mkdir()
    for plugin in ("loopback", "bridge", "host-local"):
        (bin_dir / plugin).symlink_to(f"/usr/lib/cni/{plugin}")
    flag = tmp_path / "hang"
    flag.touch()
    hang = bin_dir / "hang"
    hang.write_text(HANG_PLUGIN.format(python=sys.executable, flag=str(flag)))
    hang.chmod(0o755)
    conf_dir = tmp_path / "cni-conf"
    conf_dir.mkdir()
    conflist = json.loads(next(network.conf_dir.iterdir()).read_text())
    conflist["plugins"].append({"type": "hang"})
    (conf_dir / "10-hang.conflist").write_text(json.dumps(conflist))
    d = make_crispd(cni=conf_dir, cni_bin_dir=bin_dir, config="cni_timeout_secs = 2\n")
    c, pb = d.client, d.client.pb
    with pytest.raises(grpc.RpcError) as e:
        c.runp("slow")
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.value.details()
    assert "hang ADD" in e.value.details() and "cni_timeout_secs" in e.value.details(), e.value.details()
    # Nothing of it is left: no pod, no lease, no veth, no plugin running.
    left = nothing_left(d, network, tmp_path / "logs") + leftovers.processes_mentioning([str(bin_dir)])
    assert left == []
    # The plugin answers again: the same name is free.
    flag.unlink()
    pod, _ = c.runp("slow")
    assert c.podstatus(pod).state == pb.SANDBOX_READY
    c.rmp(pod)
    assert nothing_left(d, network, tmp_path / "logs") == []


def test_a_long_stop_blocks_no_other_call_nor_a_restart(make_crispd, cri, registry, network, tmp_path):
    d = make_crispd()
    pb = d.client.pb
    d.client.pull(registry.busybox)
    # SIGTERM ignored (and so by the sleeps it starts): only SIGKILL ends it.
    pod, cfg = d.client.runp("stubborn", log_directory=str(tmp_path / "logs"))
    ctr = d.client.create(pod, cfg, "c", registry.busybox, ["/bin/sh", "-c", "trap '' TERM; while :; do busybox sleep 1; done"], log_path="c.log")
    d.client.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)

    def long_stop(client, answers):
        try:
            client.rt.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=3600), timeout=3700)
            answers.append("OK")
        except grpc.RpcError as e:
            answers.append(e.code().name)

    def other_work(name):
        """A whole lifecycle of another pod, with an exec, and a look at
        the stubborn container."""
        c = d.client
        assert ctr_status(d, ctr).state == pb.CONTAINER_RUNNING
        p, pcfg = c.runp(name, log_directory=str(tmp_path / "logs"))
        x = c.create(p, pcfg, "x", registry.busybox, ["/bin/sh", "-c", SCRIPT], log_path=f"{name}.log")
        c.rt.StartContainer(pb.StartContainerRequest(container_id=x), timeout=60)
        r = c.rt.ExecSync(pb.ExecSyncRequest(container_id=x, cmd=["/bin/sh", "-c", "echo hi"], timeout=30), timeout=60)
        assert r.stdout == b"hi\n"
        c.rt.StopContainer(pb.StopContainerRequest(container_id=x, timeout=10), timeout=60)
        c.rmp(p)

    first = []
    t = threading.Thread(target=long_stop, args=(d.client, first))
    t.start()
    other_work("other-1")
    assert first == [], "the stop ended although its container ignores SIGTERM"
    # crispd dies with the stop under way, and starts again.
    d.kill()
    t.join()
    assert first == ["UNAVAILABLE"]
    Run(d, cri, registry, tmp_path, None).restart()
    # kubelet asks again; meanwhile everything else goes on.
    again = []
    t = threading.Thread(target=long_stop, args=(d.client, again))
    t.start()
    other_work("other-2")
    assert again == []
    # Removing the pod kills it now, and answers the waiting stop too.
    d.client.rmp(pod)
    t.join(60)
    assert again == ["OK"]
    assert nothing_left(d, network, tmp_path / "logs") == []


def test_remove_pod_sandbox_ends_a_stray_cgroup_below_the_pod(make_crispd, network, tmp_path):
    """What a crash between making a container's cgroup and recording the
    container leaves: a `crisp-<id>` cgroup in the pod's cgroup, with a
    process in it. rmdir of the pod cgroup would fail EBUSY for ever; it
    is ended and removed with the pod."""
    d = make_crispd()
    pod, cfg = d.client.runp("stray")
    stray = f"{cfg.linux.cgroup_parent}/crisp-{'5' * 64}"
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        for h in cgroup_hierarchies():
            sub = h / stray.lstrip("/")
            if sub.parent.is_dir():
                sub.mkdir()
                for f in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset: empty until set
                    if (sub / f).exists():
                        (sub / f).write_text((sub.parent / f).read_text())
                (sub / "cgroup.procs").write_text(str(proc.pid))
        d.client.rmp(pod)
        assert proc.wait(60) == -9
    finally:
        proc.kill()
    assert nothing_left(d, network, tmp_path / "logs") == []
