//! The `application/grpc+json` codec: messages in protobuf's proto3 JSON
//! mapping (lowerCamelCase names, enums by name, 64-bit integers as
//! strings, bytes as base64, default values left out), translated to and
//! from protobuf at the edge of a call so that the application only ever
//! sees protobuf bytes.
//!
//! The mapping is prost-reflect's (its serde support), driven by the
//! schema's descriptor set: nothing is written per message. Unknown JSON
//! fields are refused, as the mapping asks of parsers by default.

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};

use super::status::Status;

/// The JSON codec for the messages of one descriptor set.
#[derive(Clone, Debug)]
pub struct JsonCodec {
    /// Reference-counted inside: clones share it.
    pool: DescriptorPool,
}

impl JsonCodec {
    /// A codec for the messages of an encoded `FileDescriptorSet`.
    pub fn new(descriptor_set: &[u8]) -> Result<Self, String> {
        DescriptorPool::decode(descriptor_set)
            .map(|pool| Self { pool })
            .map_err(|e| format!("cannot read the descriptor set: {e}"))
    }

    fn message(&self, type_name: &str) -> Result<MessageDescriptor, Status> {
        self.pool
            .get_message_by_name(type_name)
            .ok_or_else(|| Status::internal(format!("no message type {type_name} in the schema")))
    }

    /// A JSON request message of type `type_name` as protobuf bytes;
    /// INVALID_ARGUMENT saying what is wrong with it.
    pub fn to_proto(&self, type_name: &str, json: &[u8]) -> Result<Vec<u8>, Status> {
        let desc = self.message(type_name)?;
        let mut de = serde_json::Deserializer::from_slice(json);
        let message =
            DynamicMessage::deserialize_with_options(desc, &mut de, &DeserializeOptions::new())
                .and_then(|m| de.end().map(|()| m))
                .map_err(|e| {
                    Status::invalid_argument(format!("cannot read {type_name} from JSON: {e}"))
                })?;
        Ok(message.encode_to_vec())
    }

    /// A protobuf response message of type `type_name` as JSON.
    pub fn to_json(&self, type_name: &str, proto: &[u8]) -> Result<Vec<u8>, Status> {
        let desc = self.message(type_name)?;
        let message = DynamicMessage::decode(desc, proto)
            .map_err(|e| Status::internal(format!("cannot decode {type_name}: {e}")))?;
        serde_json::to_vec(&message)
            .map_err(|e| Status::internal(format!("cannot write {type_name} as JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Code;
    use crisp_proto::cri;

    fn codec() -> JsonCodec {
        JsonCodec::new(crisp_proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn the_proto3_json_mapping() {
        let c = codec();
        let status = cri::ContainerStatusResponse {
            status: Some(cri::ContainerStatus {
                id: "abc".into(),
                state: cri::ContainerState::ContainerExited as i32,
                created_at: 1_700_000_000_123_456_789,
                exit_code: 137,
                labels: [("app".to_owned(), "web".to_owned())].into(),
                ..Default::default()
            }),
            info: Default::default(),
        };
        let json = c
            .to_json(
                "runtime.v1.ContainerStatusResponse",
                &status.encode_to_vec(),
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status": {
                "id": "abc",
                "state": "CONTAINER_EXITED",
                "createdAt": "1700000000123456789",
                "exitCode": 137,
                "labels": {"app": "web"},
            }})
        );
        let back = c
            .to_proto("runtime.v1.ContainerStatusResponse", &json)
            .unwrap();
        assert_eq!(
            cri::ContainerStatusResponse::decode(&back[..]).unwrap(),
            status
        );
    }

    #[test]
    fn bytes_are_base64_and_names_may_be_the_proto_ones() {
        let c = codec();
        let req = c
            .to_proto(
                "runtime.v1.ExecSyncRequest",
                br#"{"container_id": "c1", "cmd": ["ls"], "timeout": "5"}"#,
            )
            .unwrap();
        let req = cri::ExecSyncRequest::decode(&req[..]).unwrap();
        assert_eq!((req.container_id.as_str(), req.timeout), ("c1", 5));
        let resp = cri::ExecSyncResponse {
            stdout: b"hi\n".to_vec(),
            ..Default::default()
        };
        let json = c
            .to_json("runtime.v1.ExecSyncResponse", &resp.encode_to_vec())
            .unwrap();
        assert_eq!(json, br#"{"stdout":"aGkK"}"#);
    }

    #[test]
    fn bad_json_is_an_invalid_argument_saying_why() {
        let c = codec();
        for (json, what) in [
            (&br#"{"nope": 1}"#[..], "nope"),
            (br#"{"version": 1}"#, "string"),
            (br#"{"version": "v1"} trailing"#, "trailing"),
            (b"", "EOF"),
            (br#"[]"#, "VersionRequest"),
        ] {
            let err = c.to_proto("runtime.v1.VersionRequest", json).unwrap_err();
            assert_eq!(err.code, Code::InvalidArgument);
            assert!(
                err.message.contains("runtime.v1.VersionRequest"),
                "{}",
                err.message
            );
            assert!(err.message.contains(what), "{what}: {}", err.message);
        }
        let err = c.to_proto("runtime.v1.Nope", b"{}").unwrap_err();
        assert_eq!(err.code, Code::Internal);
    }
}
