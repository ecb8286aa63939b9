"""Who a container's process is, how it is stopped, and what crispd
refuses, through crispd's socket: RunAsGroup without a user,
SupplementalGroupsPolicy Merge and Strict (in `id -G` of the first and an
exec'd process, in /proc/<pid>/status and in ContainerStatus.user),
StatusResponse.features, the CRI's stop_signal (sent by StopContainer,
reported by ContainerStatus, kept across a crispd restart), and user
namespaces (only NODE, the host's)."""

import os
import stat
from pathlib import Path

import grpc
import pytest

import imagetest as it
import test_containers as tc
from common.pods import Cri, running_pod

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")

# The image critest's SupplementalGroupsPolicy specs use, rebuilt: its
# default user is default-user (1000:1000), a member of
# group-defined-in-image (50000) in the image's /etc/group.
UID, GID, IMAGE_GROUP, EXTRA_GROUP = 1000, 1000, 50000, 1234


@pytest.fixture(scope="module")
def groups_image(registry, work):
    lay = it.Layout(work / "layout-groups")
    top = it.Layer().dir("etc")
    top.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n")
    top.file(
        "etc/group",
        b"root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n",
    )
    img = lay.image([it.busybox_layer(), top.bytes()], user="default-user")
    lay.tag(img.desc, "groups")
    lay.write_index()
    registry.push(lay, "groups", "test/groups:1.0")
    return f"{registry.host}/test/groups:1.0"


@pytest.fixture
def pod(client, registry, tmp_path):
    yield from running_pod(client, "ident", registry.busybox, tmp_path / "logs")


def refused(call):
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    return e.value.details()


def proc_ids(pid):
    """(uid, gid, sorted groups) of a process, from the kernel."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return (
        int(fields["Uid"].split()[0]),
        int(fields["Gid"].split()[0]),
        sorted(int(g) for g in fields["Groups"].split()),
    )


# ------------------------------------------------------------ users and groups


def test_run_as_group_without_a_user_is_refused(client, pod):
    pb = client.pb

    def group(value, user=None):
        def tweak(cfg):
            cfg.linux.security_context.run_as_group.value = value
            if user is not None:
                cfg.linux.security_context.run_as_user.value = user

        return tweak

    why = refused(lambda: tc.create(client, pod.id, pod.cfg, "nouser", pod.image, ["id"], tweak=group(1002)))
    assert "run_as_group" in why
    # Refused before anything was made: the name is still free.
    st, out, _ = tc.run_to_exit(client, pod, "nouser", "echo $(id -u):$(id -g)", tweak=group(1002, user=1001))
    assert (st.exit_code, out) == (0, ["1001:1002"])

    # The sandbox's security context follows the same rule.
    cfg = client.pod_config("grouponly")
    cfg.linux.security_context.run_as_group.value = 1002
    why = refused(lambda: client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60))
    assert "run_as_group" in why
    assert [p.metadata.name for p in client.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items] == ["ident"]


@pytest.mark.parametrize("policy", ["Merge", "Strict"])
def test_supplemental_groups_policy(client, pod, groups_image, policy):
    pb = client.pb
    client.pull(groups_image)
    expected = [GID, EXTRA_GROUP, IMAGE_GROUP] if policy == "Merge" else [GID, EXTRA_GROUP]

    def tweak(cfg):
        sc = cfg.linux.security_context
        sc.run_as_user.value = UID
        sc.supplemental_groups.append(EXTRA_GROUP)
        sc.supplemental_groups_policy = getattr(pb, policy)

    script = "id -G; echo ready; while true; do busybox usleep 100000; done"
    cid = tc.create(client, pod.id, pod.cfg, "groups", groups_image, ["/bin/sh", "-c", script], tweak=tweak)
    # Known from creation on, as containerd reports it from the spec.
    user = tc.status(client, cid).user.linux
    assert (user.uid, user.gid, sorted(user.supplemental_groups)) == (UID, GID, expected)
    tc.start(client, cid)
    log = pod.logs / "groups.log"
    it.wait_until("ready", lambda: "ready" in tc.log_lines(log))
    # Exactly as critest expects it (the kernel keeps groups sorted).
    first = tc.log_lines(log, "stdout")[0]
    assert first == " ".join(str(g) for g in expected)
    r = tc.exec_sync(client, cid, ["id", "-G"])
    assert r.exit_code == 0 and r.stdout.decode() == first + "\n"
    # What the kernel applied is what ContainerStatus reports.
    assert proc_ids(tc.pid_of(client, cid)) == (UID, GID, expected)
    user = tc.status(client, cid).user.linux
    assert (user.uid, user.gid, sorted(user.supplemental_groups)) == (UID, GID, expected)


def test_status_advertises_supplemental_groups_policy(client):
    st = client.rt.Status(client.pb.StatusRequest(), timeout=10)
    assert st.features.supplemental_groups_policy


# ------------------------------------------------------------ stop signal


def test_stop_signal_from_the_config_survives_a_restart(make_crispd, registry, tmp_path):
    d = make_crispd()
    pb = d.client.pb
    d.client.pull(registry.busybox)
    d.client.pull(registry.busybox_usr1)
    pod_id, cfg = d.client.runp("stopsig", log_directory=str(tmp_path / "logs"))
    script = "trap 'echo got USR2; exit 42' USR2; trap 'echo got TERM; exit 43' TERM; echo ready; while true; do busybox usleep 100000; done"

    def usr2(c):
        c.stop_signal = pb.SIGUSR2

    cid = tc.create(d.client, pod_id, cfg, "usr2", registry.busybox, ["/bin/sh", "-c", script], tweak=usr2)
    plain = tc.create(d.client, pod_id, cfg, "plain", registry.busybox, ["/bin/sh", "-c", "exit 0"])
    # The image's StopSignal when the config names none; the config's over it.
    from_image = tc.create(d.client, pod_id, cfg, "img", registry.busybox_usr1, ["/bin/sh", "-c", "exit 0"])
    over_image = tc.create(d.client, pod_id, cfg, "over", registry.busybox_usr1, ["/bin/sh", "-c", "exit 0"], tweak=usr2)
    expected = {cid: pb.SIGUSR2, plain: pb.SIGTERM, from_image: pb.SIGUSR1, over_image: pb.SIGUSR2}
    for c, sig in expected.items():
        assert tc.status(d.client, c).stop_signal == sig
    tc.start(d.client, cid)
    log = tmp_path / "logs" / "usr2.log"
    it.wait_until("ready", lambda: "ready" in tc.log_lines(log))

    d.stop()
    d.client.close()
    d.start()
    d.client = Cri(d, tc.stubs(d.client))
    for c, sig in expected.items():
        assert tc.status(d.client, c).stop_signal == sig

    d.client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=60), timeout=120)
    st = tc.status(d.client, cid)
    assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 42)
    assert tc.log_lines(log, "stdout") == ["ready", "got USR2"]
    d.client.rmp(pod_id)


def test_an_unknown_stop_signal_is_refused(client, pod):
    def bogus(cfg):
        cfg.stop_signal = 4242

    why = refused(lambda: tc.create(client, pod.id, pod.cfg, "bogus", pod.image, ["/bin/sh", "-c", "exit 0"], tweak=bogus))
    assert "stop_signal" in why


# ------------------------------------------------------------ user namespaces


def test_user_namespaces_other_than_node_are_refused(client, registry, tmp_path):
    pb = client.pb
    client.pull(registry.busybox)
    for mode in ["POD", "CONTAINER", "TARGET"]:
        cfg = client.pod_config("userns")
        userns = cfg.linux.security_context.namespace_options.userns_options
        userns.mode = getattr(pb, mode)
        if mode == "POD":
            userns.uids.append(pb.IDMapping(host_id=100000, container_id=0, length=65536))
            userns.gids.append(pb.IDMapping(host_id=100000, container_id=0, length=65536))
        why = refused(lambda: client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60))
        assert "userns_options" in why and "not supported" in why, why
    assert not client.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items

    # NODE, the host's user namespace, runs as without the option.
    cfg = client.pod_config("userns", log_directory=str(tmp_path / "logs"))
    cfg.linux.security_context.namespace_options.userns_options.mode = pb.NODE
    pod_id = client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id

    class Pod:
        pass

    pod = Pod()
    pod.id, pod.cfg, pod.logs, pod.image = pod_id, cfg, tmp_path / "logs", registry.busybox

    def container_userns(mode):
        def tweak(c):
            c.linux.security_context.namespace_options.userns_options.mode = mode

        return tweak

    why = refused(lambda: tc.create(client, pod_id, cfg, "c", registry.busybox, ["/bin/sh", "-c", "exit 0"], tweak=container_userns(pb.POD)))
    assert "userns_options" in why
    st, out, _ = tc.run_to_exit(client, pod, "c", "cat /proc/self/uid_map", tweak=container_userns(pb.NODE))
    assert st.exit_code == 0
    assert out[0].split() == Path("/proc/self/uid_map").read_text().split()
    client.rmp(pod_id)


def test_pid_mode_target_joins_the_target_containers_namespace(client, pod):
    pb = client.pb
    loop = "echo ready; while true; do busybox usleep 100000; done"
    target = tc.create(client, pod.id, pod.cfg, "target", pod.image, ["/bin/sh", "-c", loop])

    def join(cfg):
        ns = cfg.linux.security_context.namespace_options
        ns.pid = pb.TARGET
        ns.target_id = target

    # Not running yet: nothing to join.
    with pytest.raises(grpc.RpcError) as e:
        tc.create(client, pod.id, pod.cfg, "debug", pod.image, ["/bin/sh", "-c", loop], tweak=join)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
    tc.start(client, target)
    debug = tc.create(client, pod.id, pod.cfg, "debug", pod.image, ["/bin/sh", "-c", loop], tweak=join)
    tc.start(client, debug)
    ns_of = lambda cid: os.readlink(f"/proc/{tc.pid_of(client, cid)}/ns/pid")
    assert ns_of(debug) == ns_of(target)
    # The target's init is PID 1 there; the debug container sees it.
    r = tc.exec_sync(client, debug, ["cat", "/proc/1/cmdline"])
    assert r.stdout.split(b"\0")[:3] == [b"/bin/sh", b"-c", loop.encode()]


def test_a_device_that_is_a_file_is_refused_a_directory_brings_its_nodes(client, pod, tmp_path):
    pb = client.pb

    def device(host, inside):
        def tweak(cfg):
            cfg.devices.append(pb.Device(host_path=str(host), container_path=inside, permissions="rwm"))

        return tweak

    plain = tmp_path / "plain"
    plain.write_text("not a device")
    why = refused(lambda: tc.create(client, pod.id, pod.cfg, "dev", pod.image, ["/bin/sh"], tweak=device(plain, "/dev/plain")))
    assert "devices[0].host_path" in why and "not a device" in why
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    os.mknod(nodes / "mynull", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    st, out, err = tc.run_to_exit(client, pod, "dev", "echo x > /dev/extra/mynull && ls /dev/extra", tweak=device(nodes, "/dev/extra"))
    assert (st.exit_code, out) == (0, ["mynull"]), err


@pytest.mark.skipif(Path("/sys/fs/cgroup/cgroup.controllers").exists(), reason="a cgroup v2 host takes unified settings")
def test_cgroup_v2_settings_on_a_v1_host_are_refused(client, pod):
    def unified(cfg):
        cfg.linux.resources.unified["memory.high"] = "64M"

    why = refused(lambda: tc.create(client, pod.id, pod.cfg, "v2", pod.image, ["/bin/sh"], tweak=unified))
    assert "unified" in why and "memory.high" in why


def test_a_privileged_container_needs_a_privileged_pod(client, pod, tmp_path):
    pb = client.pb

    def privileged(cfg):
        cfg.linux.security_context.privileged = True

    why = refused(lambda: tc.create(client, pod.id, pod.cfg, "priv", pod.image, ["/bin/sh"], tweak=privileged))
    assert "privileged" in why
    cfg = client.pod_config("privpod", log_directory=str(tmp_path / "privlogs"))
    cfg.linux.security_context.privileged = True
    pod_id = client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id

    class Pod:
        pass

    p = Pod()
    p.id, p.cfg, p.logs, p.image = pod_id, cfg, tmp_path / "privlogs", pod.image
    st, out, _ = tc.run_to_exit(client, p, "priv", "grep CapEff /proc/self/status", tweak=privileged)
    assert st.exit_code == 0
    # Every capability the kernel has, CAP_SYS_ADMIN (21) among them.
    assert int(out[0].split()[1], 16) & (1 << 21)
    client.rmp(pod_id)


def test_an_unknown_capability_is_refused_not_dropped_silently(client, pod):
    def drop(name):
        def tweak(cfg):
            cfg.linux.security_context.capabilities.drop_capabilities.append(name)

        return tweak

    why = refused(lambda: tc.create(client, pod.id, pod.cfg, "caps", pod.image, ["/bin/sh"], tweak=drop("CAP_SYSADMIN")))
    assert "drop_capabilities[0]" in why and "CAP_SYSADMIN" in why
    st, out, _ = tc.run_to_exit(client, pod, "caps", "grep CapBnd /proc/self/status", tweak=drop("net_raw"))
    assert st.exit_code == 0 and not int(out[0].split()[1], 16) & (1 << 13)
