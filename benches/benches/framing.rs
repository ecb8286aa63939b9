//! The core's framing: HPACK on a typical gRPC request header block, frame
//! parse and encode throughput, and a whole unary call through the core
//! (client ↔ server in memory, no I/O) in time and heap allocations.
//!
//! A counting global allocator counts allocations per unary call. With
//! CRISP_BENCH_OUT=DIR, the counts and the frame streams' sizes go to
//! DIR/framing.json for scripts/bench, and the call site of every
//! allocation of one steady-state call (a backtrace per allocation, crisp's
//! frames kept) to DIR/alloc_trace.txt.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crisp_core::grpc::client::{self, Client, ClientConfig};
use crisp_core::grpc::server::{self, Server, ServerConfig};
use crisp_core::h2::frame::{Data, Frame, FrameReader, Headers};
use crisp_core::h2::hpack::{Decoder, Encoder};
use crisp_core::h2::{Header, StreamId};
use crisp_proto::cri;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations made inside the server's calls only (crispd's side).
static SERVER_ALLOCS: AtomicU64 = AtomicU64::new(0);
static TRACE: AtomicBool = AtomicBool::new(false);
static TRACED: Mutex<Vec<String>> = Mutex::new(Vec::new());
thread_local! {
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

fn on_alloc(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    if TRACE.load(Ordering::Relaxed) {
        IN_TRACE.with(|t| {
            if !t.get() {
                t.set(true);
                let bt = std::backtrace::Backtrace::force_capture();
                let site = format!("allocation of {size} bytes\n{}", crisp_frames(&bt));
                TRACED.lock().unwrap().push(site);
                t.set(false);
            }
        });
    }
}

/// The backtrace's frames inside crisp (the allocator and std are noise).
fn crisp_frames(bt: &std::backtrace::Backtrace) -> String {
    let text = bt.to_string();
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let l = l.trim();
        if l.contains("crisp_core::") || l.contains("prost::") || l.contains("bytes::") {
            let at = lines.peek().map(|s| s.trim()).unwrap_or("");
            out.push(format!("    {l}  {at}"));
        }
    }
    out.truncate(6);
    out.join("\n")
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; counting allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: the caller's `GlobalAlloc::alloc` contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        on_alloc(layout.size());
        // SAFETY: the caller's `GlobalAlloc::alloc_zeroed` contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        on_alloc(new_size);
        // SAFETY: the caller's `GlobalAlloc::realloc` contract; `ptr` came
        // from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's `GlobalAlloc::dealloc` contract; `ptr` came
        // from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn request_headers() -> Vec<Header> {
    vec![
        Header::from_static(":method", "POST"),
        Header::from_static(":scheme", "http"),
        Header::from_static(":path", "/runtime.v1.RuntimeService/ContainerStatus"),
        Header::from_static(":authority", "/var/run/crisp/crisp.sock"),
        Header::from_static("content-type", "application/grpc"),
        Header::from_static("user-agent", "grpc-go/1.65.0"),
        Header::from_static("te", "trailers"),
        Header::from_static("grpc-timeout", "1999938u"),
    ]
}

fn hpack(c: &mut Criterion) {
    let headers = request_headers();
    let mut g = c.benchmark_group("hpack");
    // Cold: a fresh connection's first block (literals, table inserts).
    g.bench_function("encode_cold", |b| {
        let mut dst = BytesMut::with_capacity(512);
        b.iter(|| {
            let mut e = Encoder::new();
            dst.clear();
            e.encode(black_box(&headers), &mut dst);
            black_box(dst.len())
        })
    });
    let mut e = Encoder::new();
    let mut first = BytesMut::new();
    e.encode(&headers, &mut first);
    let first = first.freeze();
    let mut steady = BytesMut::new();
    e.encode(&headers, &mut steady);
    let steady = steady.freeze();
    // Warm: later calls on the same connection (indexed fields).
    g.bench_function("encode_warm", |b| {
        let mut dst = BytesMut::with_capacity(512);
        b.iter(|| {
            dst.clear();
            e.encode(black_box(&headers), &mut dst);
            black_box(dst.len())
        })
    });
    g.bench_function("decode_cold", |b| {
        let mut out = Vec::with_capacity(16);
        b.iter(|| {
            let mut d = Decoder::new(4096);
            out.clear();
            d.decode(black_box(&first), 1 << 16, &mut out).unwrap();
            black_box(out.len())
        })
    });
    let mut d = Decoder::new(4096);
    let mut out = Vec::with_capacity(16);
    d.decode(&first, 1 << 16, &mut out).unwrap();
    g.bench_function("decode_warm", |b| {
        b.iter(|| {
            out.clear();
            d.decode(black_box(&steady), 1 << 16, &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

/// DATA-heavy: 256 DATA frames of 16 KiB. HEADERS-heavy: 4096 HEADERS frames
/// carrying a typical 60-byte warm block and a 10-byte DATA each.
fn streams() -> [(&'static str, Vec<Frame>); 2] {
    let payload = Bytes::from(vec![0xa5u8; 16_384]);
    let data: Vec<Frame> = (0..256)
        .map(|i| {
            Frame::Data(Data::new(
                StreamId::new(1 + 2 * (i % 8)),
                payload.clone(),
                false,
            ))
        })
        .collect();
    let mut e = Encoder::new();
    let mut block = BytesMut::new();
    e.encode(&request_headers(), &mut block);
    block.clear();
    let mut long = request_headers();
    long.push(Header::from_static(
        "x-request-id",
        "f3c3c0a6-5b49-4c55-a3c6-3d1d9c1e8a3b",
    ));
    e.encode(&long, &mut block);
    let block = block.freeze();
    let msg = Bytes::from_static(&[0, 0, 0, 0, 5, 10, 3, b'a', b'b', b'c']);
    let headers: Vec<Frame> = (0..4096u32)
        .flat_map(|i| {
            let id = StreamId::new(1 + 2 * i);
            [
                Frame::Headers(Headers::new(id, block.clone(), false, true)),
                Frame::Data(Data::new(id, msg.clone(), true)),
            ]
        })
        .collect();
    [("data_heavy", data), ("headers_heavy", headers)]
}

fn encode_all(frames: &[Frame], dst: &mut BytesMut) {
    for f in frames {
        f.encode(dst);
    }
}

fn framing(c: &mut Criterion, sizes: &mut Vec<String>) {
    for (name, frames) in streams() {
        let mut wire = BytesMut::new();
        encode_all(&frames, &mut wire);
        let wire = wire.freeze();
        sizes.push(format!("\"{name}_bytes\": {}", wire.len()));
        let mut g = c.benchmark_group(format!("frames_{name}"));
        g.throughput(criterion::Throughput::Bytes(wire.len() as u64));
        g.bench_function("parse", |b| {
            let mut reader = FrameReader::new(16_384);
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| {
                    let mut n = 0;
                    while let Some(f) = reader.read(buf).unwrap() {
                        black_box(&f);
                        n += 1;
                    }
                    n
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_function("encode", |b| {
            let mut dst = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                dst.clear();
                encode_all(black_box(&frames), &mut dst);
                dst.len()
            })
        });
        g.finish();
    }
}

/// Run `f` (a call into the server), counting its allocations as the
/// server's.
fn srv<T>(f: impl FnOnce() -> T) -> T {
    let before = ALLOCS.load(Ordering::Relaxed);
    let r = f();
    SERVER_ALLOCS.fetch_add(ALLOCS.load(Ordering::Relaxed) - before, Ordering::Relaxed);
    r
}

/// Client and server of one in-memory connection, past the handshake.
struct Pair {
    c: Client,
    s: Server,
    buf: BytesMut,
    now: Instant,
    resp: cri::VersionResponse,
    req: cri::VersionRequest,
    /// Hand the header lists of the client's events back
    /// (`Client::recycle_headers`), as an application done with them may.
    recycle: bool,
}

impl Pair {
    fn new() -> Self {
        let mut p = Pair {
            c: Client::new(ClientConfig::default()),
            s: Server::new(ServerConfig::default()),
            buf: BytesMut::with_capacity(1 << 16),
            now: Instant::now(),
            resp: crisp_benches::messages::version_response(),
            req: cri::VersionRequest {
                version: "v1".into(),
            },
            recycle: true,
        };
        for _ in 0..3 {
            p.call(true);
        }
        p
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while self.c.transmit_into(&mut self.buf) > 0 {}
            if !self.buf.is_empty() {
                srv(|| self.s.recv(&self.buf, self.now)).unwrap();
                self.buf.clear();
                moved = true;
            }
            srv(|| while self.s.transmit_into(&mut self.buf) > 0 {});
            if !self.buf.is_empty() {
                self.c.recv(&self.buf, self.now).unwrap();
                self.buf.clear();
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// One unary Version call; `decode`: decode both messages with prost.
    fn call(&mut self, decode: bool) {
        let path = crisp_benches::wire::VERSION_PATH;
        let id = self
            .c
            .unary(path, &self.req, Some(Duration::from_secs(5)), self.now)
            .unwrap();
        self.pump();
        let Some(server::Event::Request { call, message }) = srv(|| self.s.poll_event()) else {
            panic!("no request")
        };
        if decode {
            let r: cri::VersionRequest = prost::Message::decode(message).unwrap();
            black_box(r);
        } else {
            black_box(message);
        }
        srv(|| self.s.respond(call.id, &self.resp)).unwrap();
        self.pump();
        let mut done = false;
        while let Some(ev) = self.c.poll_event() {
            match ev {
                client::Event::Message { id: i, message } if i == id => {
                    if decode {
                        let r: cri::VersionResponse = prost::Message::decode(message).unwrap();
                        black_box(r);
                    } else {
                        black_box(message);
                    }
                }
                client::Event::Finished {
                    id: i,
                    status,
                    trailers,
                } if i == id => {
                    assert!(status.is_ok());
                    if self.recycle {
                        self.c.recycle_headers(trailers);
                    }
                    done = true;
                }
                client::Event::Headers { headers, .. } if self.recycle => {
                    self.c.recycle_headers(headers)
                }
                _ => {}
            }
        }
        assert!(done);
    }
}

/// Allocations per call: (both sides, the server's side alone).
fn allocs_per_call(decode: bool, recycle: bool) -> (f64, f64) {
    let mut p = Pair::new();
    p.recycle = recycle;
    const N: u64 = 2000;
    let before = ALLOCS.load(Ordering::Relaxed);
    let server_before = SERVER_ALLOCS.load(Ordering::Relaxed);
    for _ in 0..N {
        p.call(decode);
    }
    (
        (ALLOCS.load(Ordering::Relaxed) - before) as f64 / N as f64,
        (SERVER_ALLOCS.load(Ordering::Relaxed) - server_before) as f64 / N as f64,
    )
}

fn unary(c: &mut Criterion, out: &mut Vec<String>) {
    let mut g = c.benchmark_group("unary_in_memory");
    for (name, decode) in [("transport", false), ("with_decode", true)] {
        let mut p = Pair::new();
        g.bench_function(name, |b| b.iter(|| p.call(decode)));
        let (both, server) = allocs_per_call(decode, true);
        out.push(format!("\"allocs_per_call_{name}\": {both:.2}"));
        out.push(format!("\"server_allocs_per_call_{name}\": {server:.2}"));
    }
    // The same call with a client that drops its events' header lists.
    let (both, server) = allocs_per_call(false, false);
    out.push(format!("\"allocs_per_call_transport_dropping\": {both:.2}"));
    out.push(format!(
        "\"server_allocs_per_call_transport_dropping\": {server:.2}"
    ));
    g.finish();
    if let Some(dir) = std::env::var_os("CRISP_BENCH_OUT") {
        let mut p = Pair::new();
        TRACE.store(true, Ordering::Relaxed);
        p.call(false);
        TRACE.store(false, Ordering::Relaxed);
        let sites = std::mem::take(&mut *TRACED.lock().unwrap());
        let path = std::path::Path::new(&dir).join("alloc_trace.txt");
        std::fs::write(path, sites.join("\n\n") + "\n").unwrap();
    }
}

fn all(c: &mut Criterion) {
    let mut out = Vec::new();
    hpack(c);
    framing(c, &mut out);
    unary(c, &mut out);
    if let Some(dir) = std::env::var_os("CRISP_BENCH_OUT") {
        let path = std::path::Path::new(&dir).join("framing.json");
        std::fs::write(path, format!("{{{}}}\n", out.join(", "))).unwrap();
    }
}

criterion_group!(benches, all);
criterion_main!(benches);
