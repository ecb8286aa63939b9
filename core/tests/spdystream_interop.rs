//! The SPDY session against moby/spdystream, the SPDY code of kubelet,
//! client-go, kubectl and crictl: a Go client (`spdystream_client/`) opens
//! error/stdin/stdout streams as client-go's exec does, waits for each
//! SYN_REPLY, sends 300 KiB on stdin (past every 64 KiB window) and reads
//! it back from stdout, reads the status from the error stream, pings,
//! and sends GOAWAY. The server side is `crisp_core::spdy` over a real
//! socket on 127.0.0.1.
//!
//! Needs Go and the module proxy (to fetch spdystream), so it is ignored
//! by default: `cargo test -p crisp-core --test spdystream_interop -- --ignored`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crisp_core::remotecommand::{status_success, StreamType};
use crisp_core::spdy::{header, Config, Connection, Event};

#[test]
#[ignore = "needs Go and the Go module proxy"]
fn spdystream_client_exec_echo() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spdystream_client");
    let bin = std::env::temp_dir().join(format!("spdystream-client-{}", std::process::id()));
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&dir)
        .status()
        .expect("run go build");
    assert!(built.success());

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut client = Command::new(&bin).arg(addr.to_string()).spawn().unwrap();
    let (mut sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();

    let mut conn = Connection::server(Config::default());
    let mut roles: Vec<(u32, StreamType)> = Vec::new();
    let role =
        |roles: &[(u32, StreamType)], t| roles.iter().find(|(_, r)| *r == t).map(|(i, _)| *i);
    let mut buf = vec![0u8; 64 * 1024];
    let mut echoed = 0usize;
    let start = Instant::now();
    while !conn.is_done() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out");
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => conn.recv(&buf[..n], Instant::now()).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::StreamOpened {
                    stream_id, headers, ..
                } => {
                    let t = header(&headers, "streamtype")
                        .and_then(StreamType::parse)
                        .unwrap();
                    roles.push((stream_id, t));
                    conn.reply(stream_id, &[], false).unwrap();
                }
                Event::Data {
                    stream_id,
                    data,
                    fin,
                } if Some(stream_id) == role(&roles, StreamType::Stdin) => {
                    let out = role(&roles, StreamType::Stdout).unwrap();
                    echoed += data.len();
                    conn.send_data(out, data, fin).unwrap();
                    if fin {
                        let err = role(&roles, StreamType::Error).unwrap();
                        conn.send_data(err, Bytes::from(status_success()), true)
                            .unwrap();
                    }
                }
                Event::Data { .. } | Event::GoAway { .. } => {}
                e => panic!("unexpected {e:?}"),
            }
        }
        while let Some(b) = conn.poll_transmit() {
            sock.write_all(&b).unwrap();
        }
    }
    let status = client.wait().unwrap();
    let _ = std::fs::remove_file(&bin);
    assert!(status.success(), "the Go client failed");
    assert_eq!(echoed, 6 + 300 * 1024);
}
