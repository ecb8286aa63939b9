"""The access policy: callers are known by SO_PEERCRED; root may call
everything, anyone else only what a rule allows."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

UID = GID = 65534  # nobody / nogroup
CLIENT = Path(__file__).with_name("nonroot_client.py")


def call_as(cri, crispd, uid, gid, *methods):
    stubs = Path(cri[0].__file__).parents[2]
    proc = subprocess.run(
        [sys.executable, str(CLIENT), str(stubs), str(crispd.socket), str(uid), str(gid), *methods],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_non_root_caller_is_denied_by_default(make_crispd, cri):
    d = make_crispd(config=f'socket_group = "{GID}"\n')
    out = call_as(cri, d, UID, GID, "Version", "UpdateRuntimeConfig")
    for method in ("Version", "UpdateRuntimeConfig"):
        assert out[method]["code"] == "PERMISSION_DENIED", out
        assert f"/runtime.v1.RuntimeService/{method}" in out[method]["details"]
        assert f"uid={UID}" in out[method]["details"]
    log = d.stderr()
    assert "permission denied" in log
    assert "/runtime.v1.RuntimeService/Version" in log
    assert f"uid={UID}" in log
    # Root still may.
    assert call_as(cri, d, 0, 0, "Version")["Version"]["code"] == "OK"


def test_read_only_rule(make_crispd, cri):
    d = make_crispd(
        config=f'socket_group = "{GID}"\n'
        f'[[access.rules]]\nuid = {UID}\nmethods = ["read-only"]\n'
    )
    out = call_as(cri, d, UID, GID, "Version", "Status", "UpdateRuntimeConfig", "RunPodSandbox")
    assert out["Version"]["code"] == "OK", out
    assert out["Status"]["code"] == "OK", out
    for method in ("UpdateRuntimeConfig", "RunPodSandbox"):
        assert out[method]["code"] == "PERMISSION_DENIED", out
        assert method in out[method]["details"]
    assert "/runtime.v1.RuntimeService/UpdateRuntimeConfig" in d.stderr()
    assert not (d.state_dir / "runtime-config.json").exists()


def test_socket_permissions_keep_other_groups_out(make_crispd, cri):
    """With the default socket_group (root) the 0660 socket itself refuses
    a caller outside the group, before any gRPC."""
    d = make_crispd()
    out = call_as(cri, d, UID, GID, "Version")
    assert out["Version"]["code"] == "UNAVAILABLE", out
    assert "permission denied" not in d.stderr()


@pytest.mark.parametrize("group", ["65534", "nogroup"])
def test_socket_mode_and_group(make_crispd, group):
    d = make_crispd(config=f'socket_group = "{group}"\n')
    st = d.socket.stat()
    import stat

    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_uid == 0
    assert st.st_gid == GID
