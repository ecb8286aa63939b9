//! The upgrade and WebSocket modules against the `websocket-client` package
//! from PyPI (scripts/install-test-deps installs it), over a real socket on
//! 127.0.0.1: the client checks our `Sec-WebSocket-Accept` and subprotocol,
//! masks its frames, fragments one message, and answers our Close; the
//! server side echoes stdin (channel 0) to stdout (channel 1) and ends with
//! a v4 `Status` on the error channel, as an exec of `cat` would.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crisp_core::remotecommand::status_success;
use crisp_core::upgrade::{parse_request, Limits, Parsed, Transport};
use crisp_core::websocket::channel::{self, Message, Protocol};
use crisp_core::websocket::{close_code, Config, Connection, Event};

const CLIENT: &str = r#"
import sys, websocket
addr, proto = sys.argv[1], sys.argv[2]
ws = websocket.create_connection("ws://%s/exec/tok-123" % addr,
                                 subprotocols=[proto, "channel.k8s.io"])
assert ws.subprotocol == proto, ws.subprotocol
b64 = proto.startswith("v4.base64")
import base64
def send(ch, data):
    if b64:
        ws.send(str(ch) + base64.b64encode(data).decode())
    else:
        ws.send_binary(bytes([ch]) + data)
big = bytes(range(256)) * 400
send(0, b"hello")
# One message in two fragments.
first = bytes([0]) + b"frag" if not b64 else ("0" + base64.b64encode(b"frag").decode()).encode()
opcode = websocket.ABNF.OPCODE_TEXT if b64 else websocket.ABNF.OPCODE_BINARY
ws.send_frame(websocket.ABNF.create_frame(first, opcode, 0))
ws.send_frame(websocket.ABNF.create_frame(b"" if b64 else b"ment", websocket.ABNF.OPCODE_CONT, 1))
send(0, big)
ws.ping(b"are you there")
if proto.startswith("v5"):
    ws.send_binary(bytes([255, 0]))   # v5: stdin closed
else:
    send(0, b"END")
out, status = b"", None
while True:
    op, data = ws.recv_data()
    if op == websocket.ABNF.OPCODE_CLOSE:
        break
    if b64:
        ch, data = data[0] - ord("0"), base64.b64decode(data[1:])
    else:
        ch, data = data[0], data[1:]
    if ch == 1:
        out += data
    elif ch == 3:
        status = data
expected = b"hello" + (b"frag" if b64 else b"fragment") + big + (b"" if proto.startswith("v5") else b"END")
assert out == expected, (len(out), len(expected))
assert status == b'{"metadata":{},"status":"Success"}', status
print("python websocket-client: ok", proto, len(out))
"#;

fn serve(proto: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = Command::new("python3")
        .args(["-c", CLIENT, &addr.to_string(), proto])
        .stdin(Stdio::null())
        .spawn()
        .expect("run python3");
    let (mut sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    // The upgrade.
    let (request, used) = loop {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out");
        match sock.read(&mut buf) {
            Ok(0) => panic!("client went away"),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
        match parse_request(&head, &Limits::default()) {
            Ok(Parsed::Complete(r, n)) => break (r, n),
            Ok(Parsed::Partial) => continue,
            Err(r) => panic!("rejected: {r:?}"),
        }
    };
    assert_eq!(request.token, "tok-123");
    let Transport::WebSocket { protocol, .. } = &request.transport else {
        panic!("{:?}", request.transport);
    };
    assert_eq!(*protocol, Some(proto));
    let chan = Protocol::from_subprotocol(*protocol).unwrap();
    sock.write_all(&request.accept_response()).unwrap();

    let mut ws = Connection::new(Config::default());
    let mut pongs = 0;
    ws.recv(&head[used..], Instant::now()).unwrap();
    while !ws.is_closed() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out");
        while let Some(ev) = ws.poll_event() {
            match ev {
                Event::Message { binary, data } => {
                    let end = match channel::decode(chan, binary, &data).unwrap() {
                        Message::Data { channel: 0, data } => {
                            let (bin, msg) = channel::encode(chan, channel::STDOUT, &data);
                            ws.send_message(bin, &msg).unwrap();
                            &data[..] == b"END"
                        }
                        Message::Close { channel: 0 } => true,
                        m => panic!("{m:?}"),
                    };
                    if end {
                        let (bin, msg) = channel::encode(chan, channel::ERROR, &status_success());
                        ws.send_message(bin, &msg).unwrap();
                        ws.close(close_code::NORMAL, "").unwrap();
                    }
                }
                Event::Pong(_) => pongs += 1,
                Event::Closed { code, .. } => assert_eq!(code, Some(1000)),
                e => panic!("{e:?}"),
            }
        }
        while let Some(b) = ws.poll_transmit() {
            sock.write_all(&b).unwrap();
        }
        if ws.is_closed() {
            break;
        }
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => ws.recv(&buf[..n], Instant::now()).unwrap(),
            Err(_) => {}
        }
    }
    assert_eq!(pongs, 0, "the client's ping is answered, not reported");
    drop(sock);
    assert!(client.wait().unwrap().success(), "the Python client failed");
}

#[test]
fn websocket_client_v5_binary() {
    serve("v5.channel.k8s.io");
}

#[test]
fn websocket_client_v4_base64() {
    serve("v4.base64.channel.k8s.io");
}
