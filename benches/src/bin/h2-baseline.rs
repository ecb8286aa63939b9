//! The baseline server: the `h2` crate on tokio (what tonic runs on), with
//! the same `Version` handler as crispd (decode the request with prost,
//! answer a fixed `VersionResponse` with `grpc-status: 0`).
//!
//!   h2-baseline SOCKET_PATH [--current-thread]
//!
//! Default: tokio's multi-threaded runtime (tonic's default).

use std::path::PathBuf;

use bytes::{BufMut, Bytes, BytesMut};
use crisp_proto::cri;
use http::{HeaderMap, HeaderValue, Response};
use tokio::net::UnixListener;

fn encode_response() -> Bytes {
    let msg = prost::Message::encode_to_vec(&crisp_benches::messages::version_response());
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(&msg);
    b.freeze()
}

async fn serve_conn(sock: tokio::net::UnixStream) {
    let mut conn = match h2::server::handshake(sock).await {
        Ok(c) => c,
        Err(_) => return,
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        tokio::spawn(async move {
            let mut body = req.into_body();
            let mut buf = BytesMut::new();
            while let Some(chunk) = body.data().await {
                let Ok(chunk) = chunk else { return };
                let _ = body.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
            }
            let status = if buf.len() >= 5 {
                match <cri::VersionRequest as prost::Message>::decode(&buf[5..]) {
                    Ok(_) => "0",
                    Err(_) => "13",
                }
            } else {
                "13"
            };
            let resp = Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let Ok(mut send) = respond.send_response(resp, false) else {
                return;
            };
            if status == "0" {
                let _ = send.send_data(encode_response(), false);
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static(status));
            let _ = send.send_trailers(trailers);
        });
    }
}

async fn run(path: PathBuf) {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind");
    println!("listening on {}", path.display());
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_conn(sock));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(
        args.next()
            .expect("usage: h2-baseline SOCKET [--current-thread]"),
    );
    let rt = if args.next().as_deref() == Some("--current-thread") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("runtime");
    rt.block_on(run(path));
}
