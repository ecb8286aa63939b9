"""A gRPC client that runs as another user.

    python3 nonroot_client.py STUBS_DIR SOCKET UID GID METHOD...

Started as root so that it can import grpcio and the generated stubs (which
live where only root can read), it then drops to UID/GID with no
supplementary groups before it connects: SO_PEERCRED, which crispd checks,
records the credentials of connect(). Prints one JSON object: for each
method, its status code name and details.
"""

import json
import os
import sys


def main():
    stubs, sock, uid, gid, *methods = sys.argv[1:]
    sys.path.insert(0, stubs)
    import grpc
    import grpc._channel  # noqa: F401  (imported lazily by grpc, unreadable later)
    import grpc._interceptor  # noqa: F401
    from runtime.v1 import api_pb2 as pb2
    from runtime.v1 import api_pb2_grpc as pb2_grpc

    os.setgroups([])
    os.setgid(int(gid))
    os.setuid(int(uid))
    assert os.getuid() == int(uid) and os.geteuid() == int(uid)

    requests = {
        "Version": pb2.VersionRequest(),
        "Status": pb2.StatusRequest(),
        "UpdateRuntimeConfig": pb2.UpdateRuntimeConfigRequest(
            runtime_config=pb2.RuntimeConfig(
                network_config=pb2.NetworkConfig(pod_cidr="10.1.0.0/16")
            )
        ),
        "RunPodSandbox": pb2.RunPodSandboxRequest(),
    }
    out = {}
    with grpc.insecure_channel(f"unix://{sock}") as ch:
        stub = pb2_grpc.RuntimeServiceStub(ch)
        for m in methods:
            try:
                getattr(stub, m)(requests[m], timeout=30)
                out[m] = {"code": "OK", "details": ""}
            except grpc.RpcError as e:
                out[m] = {"code": e.code().name, "details": e.details() or ""}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
