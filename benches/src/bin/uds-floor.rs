//! The latency floor: a Unix-socket ping-pong of the same bytes as a unary
//! call. Reads REQ_BYTES, writes RESP_BYTES, repeat; one thread per
//! connection, blocking reads. No HTTP/2, no gRPC, no protobuf.
//!
//!   uds-floor SOCKET_PATH REQ_BYTES RESP_BYTES [spin]
//!
//! With `spin`, the socket is non-blocking and reads busy-poll.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixListener;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, req, resp, spin) = match &args[..] {
        [p, q, r] => (p, q, r, false),
        [p, q, r, s] if s == "spin" => (p, q, r, true),
        _ => panic!("usage: uds-floor SOCKET REQ_BYTES RESP_BYTES [spin]"),
    };
    let req: usize = req.parse().expect("REQ_BYTES");
    let resp = vec![0x5au8; resp.parse().expect("RESP_BYTES")];
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).expect("bind");
    println!("listening on {path}");
    for sock in listener.incoming() {
        let Ok(mut sock) = sock else { continue };
        let resp = resp.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; req];
            if spin && sock.set_nonblocking(true).is_err() {
                return;
            }
            while read_exact_spin(&mut sock, &mut buf).is_ok() {
                if write_all_spin(&mut sock, &resp).is_err() {
                    return;
                }
            }
        });
    }
}

/// `read_exact` that spins through `WouldBlock` (a no-op when blocking).
fn read_exact_spin(sock: &mut impl Read, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match sock.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_all_spin(sock: &mut impl Write, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match sock.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
