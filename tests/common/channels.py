"""Reading Kubernetes' channel protocol (v4/v5.channel.k8s.io) from a
WebSocket client (websocket-client) connected to crispd's streaming server."""

import websocket


def ws_read_all(ws):
    """Every binary message until the server closes, by channel."""
    got = {}
    while True:
        try:
            op, data = ws.recv_data(control_frame=False)
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            break
        if op == websocket.ABNF.OPCODE_CLOSE:
            break
        if data:
            got.setdefault(data[0], bytearray()).extend(data[1:])
    return got
