//! `reflection_request`: one server reflection stream over crispd's real
//! schema, fed arbitrary request messages; the same bytes also go to the
//! health service's Check and Watch.
//!
//! Input: messages of the stream, each `[len][len bytes]` (the last may be
//! short). For each, the session's answer must be either a response that
//! decodes, echoes the request and host, and carries exactly one answer
//! (file descriptors that decode, the file asked for first; or a NOT_FOUND
//! error; or the list of services), or INVALID_ARGUMENT for a request that
//! does not decode or asks nothing.

use std::sync::OnceLock;

use crisp_core::grpc::health::Health;
use crisp_core::grpc::reflection::Reflection;
use crisp_core::grpc::Code;
use crisp_proto::grpc::reflection::v1::server_reflection_request::MessageRequest;
use crisp_proto::grpc::reflection::v1::server_reflection_response::MessageResponse;
use crisp_proto::grpc::reflection::v1::{ServerReflectionRequest, ServerReflectionResponse};
use prost::Message;
use prost_types::FileDescriptorProto;

fn reflection() -> &'static Reflection {
    static INDEX: OnceLock<Reflection> = OnceLock::new();
    INDEX.get_or_init(|| {
        Reflection::new(crisp_proto::FILE_DESCRIPTOR_SET).expect("crisp's schema indexes")
    })
}

pub fn reflection_request(data: &[u8]) {
    let reflection = reflection();
    let mut session = reflection.session();
    let mut health: Health<usize> = Health::new(["runtime.v1.RuntimeService"]);
    let mut rest = data;
    let mut n = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (request, tail) = tail.split_at(take);
        rest = tail;
        n += 1;

        let decoded = ServerReflectionRequest::decode(request);
        match session.answer(reflection, request) {
            Ok(bytes) => {
                let req = decoded.expect("answered a request that does not decode");
                let resp =
                    ServerReflectionResponse::decode(&bytes[..]).expect("the answer decodes");
                assert_eq!(resp.valid_host, req.host);
                assert_eq!(resp.original_request.as_ref(), Some(&req));
                check_answer(req.message_request.as_ref(), resp.message_response);
            }
            Err(status) => {
                assert_eq!(status.code, Code::InvalidArgument, "{status:?}");
                assert!(
                    decoded.is_err() || decoded.is_ok_and(|r| r.message_request.is_none()),
                    "refused a request that asks something"
                );
            }
        }

        if let Ok(bytes) = health.check(request) {
            crisp_proto::grpc::health::v1::HealthCheckResponse::decode(&bytes[..])
                .expect("a health answer decodes");
        }
        let _ = health.watch(n, request);
        if n % 3 == 0 {
            for (_, bytes) in health.set_serving(n % 2 == 0) {
                crisp_proto::grpc::health::v1::HealthCheckResponse::decode(&bytes[..])
                    .expect("a health update decodes");
            }
        }
    }
}

fn check_answer(asked: Option<&MessageRequest>, answer: Option<MessageResponse>) {
    let asked = asked.expect("a request without a question was answered");
    match answer.expect("no answer in the response") {
        MessageResponse::FileDescriptorResponse(files) => {
            let names: Vec<String> = files
                .file_descriptor_proto
                .iter()
                .map(|b| {
                    FileDescriptorProto::decode(&b[..])
                        .expect("a served file decodes")
                        .name()
                        .to_owned()
                })
                .collect();
            assert!(!names.is_empty());
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "a file twice in one answer");
            match asked {
                MessageRequest::FileByFilename(name) => assert_eq!(&names[0], name),
                MessageRequest::FileContainingSymbol(_)
                | MessageRequest::FileContainingExtension(_) => {}
                other => panic!("files for {other:?}"),
            }
        }
        MessageResponse::ErrorResponse(e) => {
            assert_eq!(e.error_code, Code::NotFound as i32);
            assert!(!matches!(asked, MessageRequest::ListServices(_)));
        }
        MessageResponse::ListServicesResponse(list) => {
            assert!(matches!(asked, MessageRequest::ListServices(_)));
            assert_eq!(list.service.len(), 5);
        }
        MessageResponse::AllExtensionNumbersResponse(numbers) => {
            let MessageRequest::AllExtensionNumbersOfType(name) = asked else {
                panic!("extension numbers for {asked:?}");
            };
            assert_eq!(&numbers.base_type_name, name);
            assert!(
                numbers.extension_number.is_empty(),
                "crisp's schema has no extensions"
            );
        }
    }
}
