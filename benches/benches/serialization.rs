//! prost vs serde_json on the same CRI messages at three sizes: encode and
//! decode time per message, and encoded size. With CRISP_BENCH_OUT=DIR the
//! encoded sizes go to DIR/sizes.json for scripts/bench.

use std::hint::black_box;

use crisp_benches::messages;
use criterion::{criterion_group, criterion_main, Criterion};
use prost::Message;
use serde::{de::DeserializeOwned, Serialize};

fn bench_one<M>(c: &mut Criterion, size: &str, msg: &M, sizes: &mut Vec<String>)
where
    M: Message + Default + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let pb = msg.encode_to_vec();
    let json = serde_json::to_vec(msg).unwrap();
    assert_eq!(&M::decode(&pb[..]).unwrap(), msg);
    assert_eq!(&serde_json::from_slice::<M>(&json).unwrap(), msg);
    sizes.push(format!(
        "\"{size}\": {{\"prost\": {}, \"json\": {}}}",
        pb.len(),
        json.len()
    ));

    let mut g = c.benchmark_group(format!("ser_{size}"));
    let mut buf = Vec::with_capacity(pb.len());
    g.bench_function("prost_encode", |b| {
        b.iter(|| {
            buf.clear();
            black_box(msg).encode(&mut buf).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("prost_decode", |b| {
        b.iter(|| M::decode(black_box(&pb[..])).unwrap())
    });
    let mut jbuf = Vec::with_capacity(json.len());
    g.bench_function("json_encode", |b| {
        b.iter(|| {
            jbuf.clear();
            serde_json::to_writer(&mut jbuf, black_box(msg)).unwrap();
            black_box(jbuf.len())
        })
    });
    g.bench_function("json_decode", |b| {
        b.iter(|| serde_json::from_slice::<M>(black_box(&json)).unwrap())
    });
    g.finish();
}

fn serialization(c: &mut Criterion) {
    let mut sizes = Vec::new();
    bench_one(c, "small", &messages::version_response(), &mut sizes);
    bench_one(
        c,
        "medium",
        &messages::container_status_response(),
        &mut sizes,
    );
    bench_one(
        c,
        "large",
        &messages::list_containers_response(1000),
        &mut sizes,
    );
    if let Some(dir) = std::env::var_os("CRISP_BENCH_OUT") {
        let path = std::path::Path::new(&dir).join("sizes.json");
        std::fs::write(path, format!("{{{}}}\n", sizes.join(", "))).unwrap();
    }
}

criterion_group!(benches, serialization);
criterion_main!(benches);
