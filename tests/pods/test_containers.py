"""Containers through crispd's real socket, with the busybox test image
from the registry: status fields over the lifecycle, the stop signal and
its SIGKILL, resource limits (OOM kill, pids), security (capabilities,
seccomp, read-only rootfs, masked and read-only paths), ExecSync's
timeout, live resource updates, log reopening after rotation, an
upgrade of crispd's binary under running containers, and an image built
by umoci."""

import json
import os
import re
import shutil
from pathlib import Path

import grpc
import pytest

import imagetest as it
from common.pods import LOG_LINE, Cri, create, exec_sync, log_lines, pid_of, running_pod, start, start_until_ready, status, wait_exited

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")

# Prints what it finds in /tmp/say (written by ExecSync) to stdout: a
# container whose output the test controls.
SAY_LOOP = "echo ready; while true; do if [ -e /tmp/say ]; then cat /tmp/say; busybox rm /tmp/say; fi; busybox usleep 50000; done"


def stubs(client):
    return (client.pb, __import__("runtime.v1.api_pb2_grpc", fromlist=["x"]))


def say(client, cid, text):
    r = exec_sync(client, cid, ["/bin/sh", "-c", f"echo '{text}' > /tmp/say.new && busybox mv /tmp/say.new /tmp/say"])
    assert r.exit_code == 0, r.stderr


def host_cgroup_dir(client, cid, controller):
    """The container's v1 cgroup directory for `controller`, as the kernel
    reports it for the container's process."""
    for line in Path(f"/proc/{pid_of(client, cid)}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path("/sys/fs/cgroup") / ctrls / path.lstrip("/")
    raise AssertionError(f"no {controller} cgroup")


@pytest.fixture
def pod(client, registry, tmp_path):
    """A running pod with the busybox images pulled; its logs in tmp_path/logs."""
    yield from running_pod(client, "ctr", registry.busybox, tmp_path / "logs", pull=[registry.busybox_usr1])


def run_to_exit(client, pod, name, script, tweak=None, image=None):
    cid = create(client, pod.id, pod.cfg, name, image or pod.image, ["/bin/sh", "-c", script], tweak=tweak)
    start(client, cid)
    st = wait_exited(client, cid)
    return st, log_lines(pod.logs / f"{name}.log", "stdout"), log_lines(pod.logs / f"{name}.log", "stderr")


# ------------------------------------------------------------ lifecycle


def test_status_fields_over_the_lifecycle(client, pod):
    pb = client.pb
    script = "echo waiting; while [ ! -e /tmp/go ]; do busybox usleep 50000; done; echo done"
    cid = create(client, pod.id, pod.cfg, "life", pod.image, ["/bin/sh", "-c", script])
    st = status(client, cid)
    assert st.state == pb.CONTAINER_CREATED
    assert st.created_at > 0 and st.started_at == 0 and st.finished_at == 0
    assert st.metadata.name == "life"
    assert st.log_path == str(pod.logs / "life.log")
    start(client, cid)
    st = status(client, cid)
    assert st.state == pb.CONTAINER_RUNNING
    assert st.started_at >= st.created_at and st.finished_at == 0
    assert st.reason == "" and st.exit_code == 0
    assert exec_sync(client, cid, ["/bin/busybox", "touch", "/tmp/go"]).exit_code == 0
    st = wait_exited(client, cid)
    assert st.finished_at >= st.started_at > 0
    assert (st.exit_code, st.reason, st.message) == (0, "Completed", "")
    assert log_lines(pod.logs / "life.log", "stdout") == ["waiting", "done"]
    # Stopping and removing what has exited is idempotent.
    client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10), timeout=60)
    assert status(client, cid).finished_at == st.finished_at
    client.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    client.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    with pytest.raises(grpc.RpcError) as e:
        status(client, cid)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_stop_sends_sigterm_then_sigkill_after_the_timeout(client, pod):
    pb = client.pb
    # PID 1 of its namespace ignores SIGTERM unless it handles it: this one
    # handles it and carries on.
    script = "trap 'echo got TERM' TERM; echo ready; while true; do busybox usleep 100000; done"
    cid, log = start_until_ready(client, pod, "stubborn", script)
    client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=5), timeout=60)
    st = status(client, cid)
    assert st.state == pb.CONTAINER_EXITED
    assert "got TERM" in log_lines(log, "stdout"), "SIGTERM was not sent first"
    assert st.exit_code == 137, "not killed by SIGKILL"
    assert st.reason == "Error"
    assert st.finished_at >= st.started_at


def test_stop_uses_the_images_stop_signal(client, pod, registry):
    pb = client.pb
    script = "trap 'echo got USR1; exit 42' USR1; trap 'echo got TERM; exit 43' TERM; echo ready; while true; do busybox usleep 100000; done"
    cid, log = start_until_ready(client, pod, "usr1", script, image=registry.busybox_usr1)
    client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=60), timeout=120)
    st = status(client, cid)
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 42, "Error")
    assert log_lines(log, "stdout") == ["ready", "got USR1"]


@pytest.fixture(scope="module")
def umoci_image(registry, work):
    """An image built by umoci as the critest images are (a "/" entry in
    each layer, no end-of-archive blocks), in the registry."""
    layout = work / "umoci-layout"
    it.umoci_image(layout, work / "umoci-src")
    ref = f"{registry.host}/test/umoci:1"
    it.skopeo_copy(f"oci:{layout}:umoci", f"docker://{ref}", "--dest-tls-verify=false")
    return ref


def test_an_image_built_by_umoci_runs(client, pod, umoci_image):
    client.pull(umoci_image)
    cmd = ["/bin/busybox", "sh", "-c", "/bin/busybox echo hello from umoci; cat /etc/hello /usr/share/extra.txt"]
    cid = create(client, pod.id, pod.cfg, "umoci", umoci_image, cmd)
    start(client, cid)
    st = wait_exited(client, cid)
    assert (st.exit_code, st.reason) == (0, "Completed"), log_lines(pod.logs / "umoci.log")
    assert log_lines(pod.logs / "umoci.log", "stdout") == ["hello from umoci", "replaced by layer 2", "second layer"]


# ------------------------------------------------------------ resources


def test_memory_limit_exceeded_is_oomkilled(client, pod):
    def limit(cfg):
        cfg.linux.resources.memory_limit_in_bytes = 32 << 20

    # The shell holds 200 MB in a variable.
    st, out, _ = run_to_exit(client, pod, "hog", "x=$(head -c 200000000 /dev/zero | busybox tr '\\0' a); echo survived", tweak=limit)
    assert "survived" not in out
    assert st.reason == "OOMKilled"
    assert st.exit_code == 137


def test_pids_limit_is_enforced(make_crispd, registry, tmp_path):
    d = make_crispd(config="pids_limit = 10\n")
    client = d.client
    client.pull(registry.busybox)
    pod_id, cfg = client.runp("pids", log_directory=str(tmp_path / "logs"))
    sleeper = create(client, pod_id, cfg, "sleeper", registry.busybox, ["/bin/busybox", "sleep", "1000"])
    start(client, sleeper)
    assert (host_cgroup_dir(client, sleeper, "pids") / "pids.max").read_text().strip() == "10"
    # The shell (PID 1) and 9 children fill the limit; the 10th fork fails
    # and the shell gives up.
    script = "i=0; while [ $i -lt 40 ]; do busybox sleep 1000 & i=$((i+1)); echo $i; done; echo forked all"
    cid = create(client, pod_id, cfg, "forker", registry.busybox, ["/bin/sh", "-c", script])
    start(client, cid)
    st = wait_exited(client, cid)
    log = tmp_path / "logs" / "forker.log"
    out = log_lines(log, "stdout")
    assert out == [str(i) for i in range(1, 10)], log.read_text()
    assert any("can't fork" in line for line in log_lines(log, "stderr")), log.read_text()
    assert st.exit_code != 0
    client.rmp(pod_id)


def test_update_container_resources_changes_the_live_cgroup(client, pod):
    pb = client.pb

    def limits(cfg):
        cfg.linux.resources.memory_limit_in_bytes = 64 << 20
        cfg.linux.resources.cpu_period = 100000
        cfg.linux.resources.cpu_quota = 50000

    cid = create(client, pod.id, pod.cfg, "upd", pod.image, ["/bin/busybox", "sleep", "1000"], tweak=limits)
    start(client, cid)
    mem, cpu = host_cgroup_dir(client, cid, "memory"), host_cgroup_dir(client, cid, "cpu")
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    # Only the memory limit, as `crictl update --memory` sends it: memory
    # and swap stay equal (no swap), as at creation.
    new = pb.LinuxContainerResources(memory_limit_in_bytes=128 << 20, cpu_period=100000, cpu_quota=20000)
    client.rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(container_id=cid, linux=new), timeout=60)
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(128 << 20)
    if (mem / "memory.memsw.limit_in_bytes").exists():
        assert (mem / "memory.memsw.limit_in_bytes").read_text().strip() == str(128 << 20)
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "20000"
    # And down again.
    new = pb.LinuxContainerResources(memory_limit_in_bytes=48 << 20)
    client.rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(container_id=cid, linux=new), timeout=60)
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(48 << 20)
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "20000"
    # The process itself is unaffected.
    assert exec_sync(client, cid, ["/bin/echo", "alive"]).stdout == b"alive\n"


def test_container_status_reports_updated_resources(make_crispd, registry, tmp_path):
    d = make_crispd()
    client, pb = d.client, d.client.pb
    client.pull(registry.busybox)
    pod_id, cfg = client.runp("res")

    def limits(cfg):
        cfg.linux.resources.memory_limit_in_bytes = 64 << 20
        cfg.linux.resources.cpu_shares = 512

    cid = create(client, pod_id, cfg, "upd", registry.busybox, ["/bin/busybox", "sleep", "1000"], tweak=limits)
    start(client, cid)
    assert status(client, cid).resources.linux.memory_limit_in_bytes == 64 << 20
    new = pb.LinuxContainerResources(memory_limit_in_bytes=48 << 20, cpu_period=100000, cpu_quota=20000)
    client.rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(container_id=cid, linux=new), timeout=60)

    def check(client):
        r = status(client, cid).resources.linux
        # What was set is replaced; the rest stays as created.
        assert (r.memory_limit_in_bytes, r.cpu_period, r.cpu_quota, r.cpu_shares) == (48 << 20, 100000, 20000, 512)

    check(client)
    # Recorded, so a restarted crispd reports the same.
    d.kill()
    d.start()
    d.client = Cri(d, stubs(client))
    check(d.client)
    # An exited container's limits are recorded too, as containerd does.
    d.client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
    new = pb.LinuxContainerResources(cpu_shares=256)
    d.client.rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(container_id=cid, linux=new), timeout=60)
    assert status(d.client, cid).resources.linux.cpu_shares == 256
    d.client.rmp(pod_id)


# ------------------------------------------------------------ security


def test_dropped_capability_is_really_missing(client, pod):
    script = "busybox touch /tmp/f && busybox chown 1000:1000 /tmp/f && echo chowned; busybox grep CapEff /proc/self/status"
    st, out, _ = run_to_exit(client, pod, "caps", script)
    assert st.exit_code == 0 and out[0] == "chowned", out
    assert int(out[1].split()[1], 16) & 1 == 1  # CAP_CHOWN is bit 0

    def drop(cfg):
        cfg.linux.security_context.capabilities.drop_capabilities.append("CHOWN")

    st, out, err = run_to_exit(client, pod, "nocaps", script, tweak=drop)
    assert "chowned" not in out
    assert any("Operation not permitted" in line for line in err), err
    assert int(out[0].split()[1], 16) & 1 == 0


def test_seccomp_runtime_default_blocks_unshare_unconfined_allows_it(client, pod):
    pb = client.pb
    # A user namespace needs no capability: only seccomp can refuse it.
    script = "busybox grep '^Seccomp:' /proc/self/status; busybox unshare -U true && echo unshared"

    def profile(kind):
        def tweak(cfg):
            cfg.linux.security_context.seccomp.profile_type = kind

        return tweak

    st, out, err = run_to_exit(client, pod, "confined", script, tweak=profile(pb.SecurityProfile.RuntimeDefault))
    assert out == ["Seccomp:\t2"], (out, err)
    assert any("Operation not permitted" in line for line in err), err
    st, out, err = run_to_exit(client, pod, "unconfined", script, tweak=profile(pb.SecurityProfile.Unconfined))
    assert out == ["Seccomp:\t0", "unshared"], (out, err)


def test_seccomp_localhost_profile_and_a_profile_crispd_cannot_compile(client, pod, tmp_path):
    pb = client.pb
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }))

    def localhost(path):
        def tweak(cfg):
            cfg.linux.security_context.seccomp.profile_type = pb.SecurityProfile.Localhost
            cfg.linux.security_context.seccomp.localhost_ref = str(path)

        return tweak

    script = "busybox mkdir /tmp/d && echo made; echo x > /tmp/f && echo wrote"
    st, out, err = run_to_exit(client, pod, "nomkdir", script, tweak=localhost(profile))
    assert out == ["wrote"], (out, err)
    assert any("Operation not permitted" in line for line in err), err
    # crispd compiled the profile and handed the monitor the programs.
    ctrs = client.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers
    cid = next(c.id for c in ctrs if c.metadata.name == "nomkdir")
    assert (Path(client.daemon.runtime_dir) / "containers" / cid / "seccomp.bpf").stat().st_size > 0

    # A profile that parses but whose action crispd's filters cannot carry.
    notify = tmp_path / "notify.json"
    notify.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
    }))
    with pytest.raises(grpc.RpcError) as e:
        create(client, pod.id, pod.cfg, "notify", pod.image, ["/bin/true"], tweak=localhost(notify))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert "SCMP_ACT_NOTIFY" in e.value.details()
    names = [c.metadata.name for c in client.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers]
    assert "notify" not in names


def test_readonly_rootfs_refuses_writes(client, pod):
    script = "for p in /x /tmp/x /etc/x /dev/shm/x; do if busybox touch $p 2>/dev/null; then echo $p written; else echo $p refused; fi; done"

    def ro(cfg):
        cfg.linux.security_context.readonly_rootfs = True

    _, out, _ = run_to_exit(client, pod, "ro", script, tweak=ro)
    # As with containerd and runc: the whole rootfs (its /tmp too) is
    # read-only; /dev/shm is a tmpfs of its own.
    assert out == ["/x refused", "/tmp/x refused", "/etc/x refused", "/dev/shm/x written"]
    _, out, _ = run_to_exit(client, pod, "rw", script)
    assert out == ["/x written", "/tmp/x written", "/etc/x written", "/dev/shm/x written"]


def test_masked_and_readonly_paths(client, pod):
    # What the host shows there, so masking is what hides it.
    assert Path("/proc/timer_list").read_text() != ""
    assert list(Path("/sys/firmware").iterdir()) != []
    script = (
        "echo timer_list $(busybox wc -c < /proc/timer_list);"
        "echo firmware $(busybox ls -A /sys/firmware | busybox wc -l);"
        "echo crisp > /sys/firmware/x 2>/dev/null && echo firmware writable || echo firmware read-only;"
        "echo crisp > /proc/sys/kernel/domainname 2>/dev/null && echo sys writable || echo sys read-only"
    )
    _, out, _ = run_to_exit(client, pod, "masked", script)
    assert out == ["timer_list 0", "firmware 0", "firmware read-only", "sys read-only"]


# ------------------------------------------------------------ exec, logs


def test_exec_sync_timeout_kills_the_command(client, pod):
    pb = client.pb
    cid = create(client, pod.id, pod.cfg, "host", pod.image, ["/bin/busybox", "sleep", "1000"])
    start(client, cid)
    with pytest.raises(grpc.RpcError) as e:
        client.rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["/bin/busybox", "sleep", "100"], timeout=1), timeout=60)
    # kubelet reads DEADLINE_EXCEEDED as a probe timeout (as containerd
    # answers); the message is crispd's, not grpcio's own deadline.
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "timed out after 1s" in e.value.details()
    ps = exec_sync(client, cid, ["/bin/busybox", "ps", "-o", "pid,args"]).stdout.decode()
    procs = [line.split(None, 1)[1] for line in ps.splitlines()[1:]]
    assert any(a.endswith("sleep 1000") for a in procs), ps
    assert not any(a.endswith("sleep 100") for a in procs), ps
    # The container is unharmed.
    assert status(client, cid).state == pb.CONTAINER_RUNNING


def test_reopen_container_log_after_rotation(client, pod):
    pb = client.pb
    cid = create(client, pod.id, pod.cfg, "rot", pod.image, ["/bin/sh", "-c", SAY_LOOP])
    start(client, cid)
    log = pod.logs / "rot.log"
    say(client, cid, "before rotation")
    it.wait_until("first line", lambda: "before rotation" in log_lines(log))
    rotated = pod.logs / "rot.log.1"
    os.rename(log, rotated)
    client.rt.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid), timeout=30)
    assert log.exists()
    say(client, cid, "after rotation")
    it.wait_until("line after rotation", lambda: "after rotation" in log_lines(log))
    assert log_lines(log) == ["after rotation"]
    assert log_lines(rotated) == ["ready", "before rotation"]


# ------------------------------------------------------------ upgrade


def test_upgrade_keeps_containers_running(make_crispd, registry, tmp_path):
    d = make_crispd()
    pb = d.client.pb
    d.client.pull(registry.busybox)
    pod_id, cfg = d.client.runp("upg", log_directory=str(tmp_path / "logs"))
    script = "trap 'echo bye; exit 0' TERM; " + SAY_LOOP
    cid = create(d.client, pod_id, cfg, "keep", registry.busybox, ["/bin/sh", "-c", script])
    start(d.client, cid)
    log = tmp_path / "logs" / "keep.log"
    say(d.client, cid, "before upgrade")
    it.wait_until("first line", lambda: "before upgrade" in log_lines(log))
    pid = pid_of(d.client, cid)
    started_at = status(d.client, cid).started_at

    # The new binary at a new path; the old one stops gracefully.
    new_bin = tmp_path / "crispd-upgraded"
    shutil.copy2(d.binary, new_bin)
    d.stop()
    assert d.proc.returncode == 0, d.log()
    assert Path(f"/proc/{pid}").exists(), "SIGTERM to crispd killed a container"
    d.client.close()
    d.binary = new_bin
    d.start()
    assert Path(f"/proc/{d.proc.pid}/exe").resolve() == new_bin
    d.client = Cri(d, stubs(d.client))

    st = status(d.client, cid)
    assert st.state == pb.CONTAINER_RUNNING
    assert st.started_at == started_at
    assert pid_of(d.client, cid) == pid
    r = exec_sync(d.client, cid, ["/bin/sh", "-c", "echo still here; exit 4"])
    assert (r.stdout, r.exit_code) == (b"still here\n", 4)
    say(d.client, cid, "after upgrade")
    it.wait_until("line after the upgrade", lambda: "after upgrade" in log_lines(log))
    d.client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=30), timeout=60)
    st = status(d.client, cid)
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 0, "Completed")
    assert log_lines(log, "stdout") == ["ready", "before upgrade", "after upgrade", "bye"]
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    d.client.rmp(pod_id)


# ------------------------------------------------------------ the tiny monitor


def vm_rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_monitor_after_start_is_the_tiny_program(client, pod):
    """Once the container is created, `crispd monitor` execs the tiny static
    monitor (run from a memfd): the container's parent is that program, one
    thread, and it serves logs, exec and stop as before. Its RSS is printed
    (`pytest -s`), not asserted."""
    pb = client.pb
    cid = create(client, pod.id, pod.cfg, "tiny", pod.image, ["/bin/sh", "-c", SAY_LOOP])
    start(client, cid)
    log = pod.logs / "tiny.log"
    it.wait_until("first line", lambda: "ready" in log_lines(log))
    pid = pid_of(client, cid)
    stat = Path(f"/proc/{pid}/stat").read_text()
    monitor = int(stat.rsplit(") ", 1)[1].split()[1])
    exe = os.readlink(f"/proc/{monitor}/exe")
    assert exe.startswith("/memfd:crispd-monitor"), exe
    cmdline = Path(f"/proc/{monitor}/cmdline").read_bytes().split(b"\0")
    assert cmdline[:2] == [b"crispd-monitor", cid.encode()], cmdline
    status_text = Path(f"/proc/{monitor}/status").read_text()
    assert re.search(r"^Threads:\s+1$", status_text, re.M), status_text
    print(f"\ntiny monitor pid {monitor}: VmRSS {vm_rss_kib(monitor)} KiB")
    say(client, cid, "through the tiny monitor")
    it.wait_until("line", lambda: "through the tiny monitor" in log_lines(log))
    # The shell is pid 1 in its namespace: SIGTERM is ignored, SIGKILL ends it.
    client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1), timeout=60)
    st = status(client, cid)
    assert (st.state, st.exit_code, st.message) == (pb.CONTAINER_EXITED, 137, "killed by signal 9")
    assert log_lines(log, "stdout") == ["ready", "through the tiny monitor"]
    record = json.loads((Path(client.daemon.runtime_dir) / "containers" / cid / "exit.json").read_text())
    assert record["exit_code"] == 137 and record["signal"] == 9 and record["oom_killed"] is False
    it.wait_until("monitor gone", lambda: not Path(f"/proc/{monitor}").exists() or "Z" in Path(f"/proc/{monitor}/stat").read_text().rsplit(") ", 1)[1][:1])


def test_start_that_cannot_exec_reports_why(client, pod):
    """The executable is there at CreateContainer (it is looked up then) and
    gone at StartContainer: the container's exec fails, the monitor (the
    tiny one) reports the executor's reason, and the container is removed
    as usual."""
    pb = client.pb
    cid = create(client, pod.id, pod.cfg, "noexec", pod.image, ["/bin/busybox", "true"])
    rootfs = Path(client.daemon.runtime_dir) / "containers" / cid / "rootfs"
    (rootfs / "bin" / "busybox").unlink()
    with pytest.raises(grpc.RpcError) as e:
        client.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=30)
    assert e.value.code() == grpc.StatusCode.INTERNAL, e.value.details()
    assert "exec: /bin/busybox: ENOENT: No such file or directory" in e.value.details(), e.value.details()
    client.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)


def test_long_lines_are_split_into_partials(client, pod):
    """Lines longer than 16 KiB are written as partial lines (P) of 16 KiB
    and a final one (F); a last line without a newline is written whole at
    the end of the stream; stdout and stderr stay apart."""
    script = (
        "busybox head -c 40000 /dev/zero | busybox tr '\\0' x; echo; "
        "echo short; echo err >&2; "
        "busybox head -c 16384 /dev/zero | busybox tr '\\0' y; echo; "
        "printf 'no newline'"
    )
    st, out, err = run_to_exit(client, pod, "long", script)
    assert st.exit_code == 0
    assert out == ["x" * 40000, "short", "y" * 16384, "no newline"]
    assert err == ["err"]
    tags = [
        (m.group(2), m.group(3), len(m.group(4)))
        for m in (LOG_LINE.match(line) for line in (pod.logs / "long.log").read_text().splitlines())
    ]
    # The order between the two streams is the pipes' business.
    assert [t[1:] for t in tags if t[0] == "stdout"] == [
        ("P", 16384),
        ("P", 16384),
        ("F", 40000 - 2 * 16384),
        ("F", 5),
        ("F", 16384),
        ("F", 10),
    ], tags
    assert [t[1:] for t in tags if t[0] == "stderr"] == [("F", 3)], tags


def monitor_ask(sock_path, request, timeout=10):
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(request)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def test_monitor_protocol(client, pod):
    """The monitor's socket, spoken to directly: states, unknown requests,
    a non-root peer refused, `wait` answered at the exit."""
    import socket

    pb = client.pb
    cid = create(client, pod.id, pod.cfg, "proto", pod.image, ["/bin/sh", "-c", "trap 'exit 7' TERM; while true; do busybox usleep 20000; done"])
    sock = Path(client.daemon.runtime_dir) / "containers" / cid / "sock"
    state = monitor_ask(sock, b"state\n").decode()
    assert re.fullmatch(r"created \d+\n", state), state
    assert monitor_ask(sock, b"bogus \"x\"\n") == b'error unknown request "bogus"\n'
    assert monitor_ask(sock, b"signal 99\n") == b"error unknown signal 99\n"
    # Only root may drive it: another uid gets no answer (here it cannot
    # even reach the socket; the monitor checks SO_PEERCRED too).
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        try:
            os.setuid(65534)
            try:
                answer = monitor_ask(sock, b"state\n")
            except OSError:
                answer = b""
            os.write(w, answer or b"none")
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    assert os.read(r, 100) == b"none"
    os.close(r)
    waiter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waiter.settimeout(30)
    waiter.connect(str(sock))
    waiter.sendall(b"wait\n")
    start(client, cid)
    state = monitor_ask(sock, b"state\n").decode()
    assert re.fullmatch(r"running \d+ \d{19}\n", state), state
    assert monitor_ask(sock, b"start\n") == b"error already started\n"
    client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=30), timeout=60)
    assert waiter.recv(100) == b"exited\n"
    waiter.close()
    st = status(client, cid)
    assert (st.exit_code, st.message) == (7, "")


# ------------------------------------------------------------ spare monitors


def spares_of(daemon):
    """Pids of the spare monitors the crispd `daemon` started: the process
    crispd runs forks the spare off and exits, so crispd's own child is
    not one (counting it could see one spare, then none, as it exits before
    a /proc listing that began earlier reaches the spare's pid)."""
    mark = f"monitor-spare\0--daemon\0{daemon.proc.pid}\0".encode()
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text().rsplit(") ", 1)[1].split()
            if mark in (p / "cmdline").read_bytes() and stat[0] != "Z" and int(stat[1]) != daemon.proc.pid:
                out.append(int(p.name))
        except OSError:
            pass
    return out


def spares_ready(daemon):
    """How many spares crispd has taken into its slot so far (its debug
    log says so). A spare process can exist a while before that: the
    process crispd started forks it off, then must exit and be reaped."""
    return daemon.log_path.read_text(errors="replace").count("spare container monitor ready")


def parent_of(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])


def test_containers_get_the_spare_monitor_and_a_dead_spare_is_replaced(client, pod):
    """After RunPodSandbox crispd keeps one monitor started ahead of need;
    CreateContainer hands it the container (the spare becomes the
    container's parent) and starts the next. A spare killed while it waits
    costs nothing but a fresh monitor on the call's path."""
    d = client.daemon
    it.wait_until("a spare monitor", lambda: len(spares_of(d)) == 1 and spares_ready(d) >= 1)
    (spare,) = spares_of(d)
    cid = create(client, pod.id, pod.cfg, "first", pod.image, ["/bin/sh", "-c", SAY_LOOP])
    start(client, cid)
    pid = pid_of(client, cid)
    assert parent_of(pid) == spare
    # The spare starts with SCHED_IDLE; its container runs with the normal
    # policy (field 41 of stat: 0 is SCHED_OTHER, 5 SCHED_IDLE).
    assert Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[38] == "0"
    it.wait_until("the next spare", lambda: len(spares_of(d)) == 1 and spares_of(d) != [spare] and spares_ready(d) >= 2)

    (spare,) = spares_of(d)
    os.kill(spare, 9)
    it.wait_until("the spare gone", lambda: spares_of(d) == [])
    cid2 = create(client, pod.id, pod.cfg, "second", pod.image, ["/bin/sh", "-c", SAY_LOOP])
    start(client, cid2)
    assert parent_of(pid_of(client, cid2)) != spare
    it.wait_until("second line", lambda: "ready" in log_lines(pod.logs / "second.log"))
    it.wait_until("a new spare", lambda: len(spares_of(d)) == 1)
    for c in (cid, cid2):
        client.rt.StopContainer(client.pb.StopContainerRequest(container_id=c, timeout=0), timeout=60)
        client.rt.RemoveContainer(client.pb.RemoveContainerRequest(container_id=c), timeout=60)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_spare_monitor_goes_with_crispd(make_crispd, registry, tmp_path, how):
    """A spare holds no container: it exits when its crispd does, stopped or
    SIGKILLed (its stdin, held only by crispd, reaches end of file)."""
    d = make_crispd()
    d.client.pull(registry.busybox)
    pod_id, _ = d.client.runp("spare", log_directory=str(tmp_path / "logs"))
    it.wait_until("a spare monitor", lambda: len(spares_of(d)) == 1)
    (spare,) = spares_of(d)
    d.client.rmp(pod_id)
    d.kill() if how == "kill" else d.stop()
    it.wait_until("the spare gone", lambda: not Path(f"/proc/{spare}").exists() or "Z" in Path(f"/proc/{spare}/stat").read_text().rsplit(") ", 1)[1][:1])
