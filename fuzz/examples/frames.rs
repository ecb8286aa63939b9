//! Prints the frames (and decoded header blocks) of a `server_bytes` or
//! `frame_decoder` input: `cargo run --example frames -- FILE [SKIP]`,
//! SKIP being the control bytes before the wire bytes (default 2).

use bytes::BytesMut;
use crisp_core::h2::frame::{Frame, FrameReader, MAX_MAX_FRAME_SIZE};
use crisp_core::h2::hpack::Decoder;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: frames FILE [SKIP]");
    let skip: usize = args.next().map_or(2, |s| s.parse().expect("SKIP"));
    let data = std::fs::read(&path).expect("read input");
    let mut buf = BytesMut::from(&data[skip.min(data.len())..]);
    let mut reader = FrameReader::new(MAX_MAX_FRAME_SIZE);
    let mut decoder = Decoder::new(4096);
    loop {
        match reader.read(&mut buf) {
            Ok(Some(f)) => {
                println!("{f:?}");
                let block = match &f {
                    Frame::Headers(h) => Some(h.fragment.clone()),
                    Frame::Continuation(c) => Some(c.fragment.clone()),
                    _ => None,
                };
                if let Some(b) = block {
                    let mut out = Vec::new();
                    let r = decoder.decode(&b, usize::MAX, &mut out);
                    println!("    hpack {r:?}: {out:?}");
                }
            }
            Ok(None) => break,
            Err(e) => println!("error {e:?}"),
        }
    }
    println!("{} bytes left", buf.len());
}
