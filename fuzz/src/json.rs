//! `grpc_json`: the `application/grpc+json` codec on arbitrary JSON for
//! any message of crisp's schema.
//!
//! Input: `[type selector][json bytes]`. The selector picks the request
//! or response type of one rpc of the method table. Whatever the bytes,
//! the codec must not panic; what it reads must write back as JSON that
//! reads again to the same message (compared as JSON values, so map order
//! and NaN do not matter), and a protobuf message that does not decode
//! must be refused, not written.

use std::sync::OnceLock;

use crisp_core::grpc::json::JsonCodec;
use crisp_core::grpc::Code;
use crisp_proto::methods::METHODS;

fn codec() -> &'static JsonCodec {
    static CODEC: OnceLock<JsonCodec> = OnceLock::new();
    CODEC.get_or_init(|| JsonCodec::new(crisp_proto::FILE_DESCRIPTOR_SET).expect("schema loads"))
}

pub fn grpc_json(data: &[u8]) {
    let Some((&sel, json)) = data.split_first() else {
        return;
    };
    let desc = &METHODS[usize::from(sel >> 1) % METHODS.len()];
    let type_name = if sel & 1 == 1 {
        desc.response_type
    } else {
        desc.request_type
    };
    let codec = codec();
    let proto = match codec.to_proto(type_name, json) {
        Ok(p) => p,
        Err(status) => {
            assert_eq!(status.code, Code::InvalidArgument, "{status:?}");
            // The same bytes as protobuf: written as JSON or refused.
            if let Ok(written) = codec.to_json(type_name, json) {
                serde_json::from_slice::<serde_json::Value>(&written)
                    .expect("the codec writes JSON");
            }
            return;
        }
    };
    let first = codec
        .to_json(type_name, &proto)
        .expect("what was read is written");
    let again = codec
        .to_proto(type_name, &first)
        .expect("what was written reads again");
    let second = codec
        .to_json(type_name, &again)
        .expect("and is written again");
    let first: serde_json::Value = serde_json::from_slice(&first).expect("JSON out");
    let second: serde_json::Value = serde_json::from_slice(&second).expect("JSON out");
    assert_eq!(first, second, "{type_name} changed in a JSON round trip");
}
