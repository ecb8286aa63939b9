"""Port mappings through the CNI portmap plugin: RunPodSandbox's
port_mappings reach a plugin that declares the `portMappings` capability,
a container listening in the pod answers on 127.0.0.1:<hostPort> of the
host, and StopPodSandbox (CNI DEL with the recorded mappings) removes the
iptables rules again. Everything stays on this host: a bridge of the
test's own, with an address but no gateway or masquerade for the pods;
portmap's SNAT applies only to connections from the host's loopback."""

import os
import socket
import subprocess
from pathlib import Path

import pytest

import imagetest as it

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, iptables)"),
    pytest.mark.skipif(not Path("/usr/lib/cni/portmap").exists(), reason="no CNI portmap plugin"),
    pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v iptables-save"], stdout=subprocess.DEVNULL).returncode != 0, reason="no iptables"),
]

# Own bridge, subnet and host port per pytest process (beside the
# session network of conftest.py).
BRIDGE = f"crisppm{os.getpid() % 100000}"
PREFIX = f"10.232.{os.getpid() % 250}"


def free_port():
    """A TCP port nothing on the host listens on (so that after the stop
    nothing answers on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HOST_PORT = free_port()


@pytest.fixture
def portmap_net(tmp_path):
    subprocess.run(["ip", "link", "del", BRIDGE], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    # The host's address on the bridge: the route to the pods, and the
    # source portmap masquerades loopback connections to.
    subprocess.run(["ip", "addr", "add", f"{PREFIX}.1/24", "dev", BRIDGE], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    conf = tmp_path / "cni-portmap"
    conf.mkdir()
    (conf / "10-crisppm.conflist").write_text(
        f"""{{
  "cniVersion": "1.0.0",
  "name": "crisppm",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{BRIDGE}",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{PREFIX}.0/24", "rangeStart": "{PREFIX}.10"}}]], "dataDir": "{tmp_path / 'ipam'}"}}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"""
    )
    yield conf
    subprocess.run(["ip", "link", "del", BRIDGE], stderr=subprocess.DEVNULL)


def nat_rules():
    return subprocess.run(["iptables-save", "-t", "nat"], stdout=subprocess.PIPE, text=True, check=True).stdout


def fetch(host, port):
    """Connect, read what the peer sends until it closes."""
    with socket.create_connection((host, port), timeout=5) as s:
        s.settimeout(5)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk


def answers(host, port):
    try:
        return fetch(host, port)
    except OSError:
        return None


def test_port_mapping_reaches_the_pod_and_goes_on_stop(make_crispd, registry, portmap_net):
    d = make_crispd(cni=portmap_net)
    client, pb = d.client, d.client.pb
    client.pull(registry.busybox)
    cfg = client.pod_config("pm")
    cfg.port_mappings.add(protocol=pb.TCP, container_port=8080, host_port=HOST_PORT, host_ip="127.0.0.1")
    pod = client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    ip = client.podstatus(pod).network.ip
    assert ip.startswith(PREFIX + ".")

    # portmap's rules for this pod: the host port, tagged with the pod's
    # ID, DNAT to the pod's address.
    rules = nat_rules()
    assert [l for l in rules.splitlines() if pod in l and str(HOST_PORT) in l], rules
    assert f"-d 127.0.0.1/32 -p tcp -m tcp --dport {HOST_PORT} -j DNAT --to-destination {ip}:8080" in rules, rules

    cid = client.create(pod, cfg, "listener", registry.busybox, ["/bin/sh", "-c", "while :; do echo hello-from-pod | nc -l -p 8080; done"])
    client.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    # Straight to the pod over the bridge, then through the host port on
    # the host's loopback (DNAT in OUTPUT, SNAT to the bridge address).
    it.wait_until("the pod's listener", lambda: answers(ip, 8080) == b"hello-from-pod\n")
    # (nc serves one connection at a time: wait for the next one.)
    it.wait_until("the pod through 127.0.0.1:hostPort", lambda: answers("127.0.0.1", HOST_PORT) == b"hello-from-pod\n")

    client.stopp(pod)
    rules = nat_rules()
    assert pod not in rules, rules
    assert answers("127.0.0.1", HOST_PORT) is None
    client.stopp(pod)  # idempotent: nothing left to delete
    client.rmp(pod)


def test_port_mapping_rules_go_after_a_crispd_crash(make_crispd, portmap_net):
    """DEL after a restart carries the mappings recorded at ADD."""
    d = make_crispd(cni=portmap_net)
    pb = d.client.pb
    cfg = d.client.pod_config("pmcrash")
    cfg.port_mappings.add(protocol=pb.UDP, container_port=53, host_port=HOST_PORT, host_ip="127.0.0.1")
    pod = d.client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    assert [l for l in nat_rules().splitlines() if pod in l and "-p udp" in l and str(HOST_PORT) in l]
    d.kill()
    d.start()
    d.client.close()
    from common.pods import Cri

    d.client = Cri(d, (pb, __import__("runtime.v1.api_pb2_grpc", fromlist=["x"])))
    d.client.stopp(pod)
    rules = nat_rules()
    assert pod not in rules, rules
    d.client.rmp(pod)


def test_a_mapping_without_host_port_publishes_nothing(make_crispd, portmap_net):
    """`host_port: 0` means no host port (kubelet sends such mappings for
    a containerPort without hostPort): it reaches no plugin, the one with a
    host port beside it does."""
    d = make_crispd(cni=portmap_net)
    client, pb = d.client, d.client.pb
    cfg = client.pod_config("pmzero")
    cfg.port_mappings.add(protocol=pb.TCP, container_port=9000, host_port=0)
    cfg.port_mappings.add(protocol=pb.TCP, container_port=8080, host_port=HOST_PORT, host_ip="127.0.0.1")
    pod = client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    ip = client.podstatus(pod).network.ip
    rules = nat_rules()
    assert f"--dport {HOST_PORT} -j DNAT --to-destination {ip}:8080" in rules, rules
    mine = [l for l in rules.splitlines() if pod in l or ip + ":" in l]
    assert not [l for l in mine if "9000" in l or "--dport 0 " in l], mine
    client.stopp(pod)
    assert pod not in nat_rules()
    client.rmp(pod)

    # Only mappings without a host port: the pod runs, nothing is published.
    cfg = client.pod_config("pmzero2")
    cfg.port_mappings.add(protocol=pb.UDP, container_port=53, host_port=0)
    pod = client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    assert client.podstatus(pod).state == pb.SANDBOX_READY
    assert pod not in nat_rules()
    client.rmp(pod)
