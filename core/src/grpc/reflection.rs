//! gRPC server reflection (`grpc.reflection.v1.ServerReflection` and its
//! `v1alpha` twin) without I/O: from the server's encoded
//! `FileDescriptorSet` to the answer of each request on a reflection
//! stream.
//!
//! [`Reflection`] indexes the descriptor set once: files by name, every
//! fully qualified symbol (services, methods, messages and their fields
//! and oneofs, nested types, enums and their values, extensions) by the
//! file that defines it. Each stream has a [`Session`], which remembers
//! the files it already sent: a file descriptor answer carries the file
//! asked for, then those of its transitive imports the client has not
//! seen on this stream (as grpc-go answers), so a client can always build
//! a complete pool.
//!
//! v1 and v1alpha differ only in their package name, so their messages
//! are identical on the wire: both are decoded and encoded here with the
//! v1 types.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use crisp_proto::grpc::reflection::v1::server_reflection_request::MessageRequest;
use crisp_proto::grpc::reflection::v1::server_reflection_response::MessageResponse;
use crisp_proto::grpc::reflection::v1::{
    ErrorResponse, ExtensionNumberResponse, ExtensionRequest, FileDescriptorResponse,
    ListServiceResponse, ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};
use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

use super::status::{Code, Status};

/// One file of the set, encoded once.
#[derive(Debug)]
struct File {
    /// The serialized `FileDescriptorProto`, as sent.
    encoded: Bytes,
    /// Indices of the files it imports.
    imports: Vec<usize>,
}

/// What a fully qualified name denotes; only messages matter (for
/// `all_extension_numbers_of_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Symbol {
    Message,
    Other,
}

/// The reflection index of one server's schema.
#[derive(Debug)]
pub struct Reflection {
    files: Vec<File>,
    by_name: HashMap<String, usize>,
    /// Fully qualified name (no leading dot) → defining file.
    symbols: HashMap<String, (usize, Symbol)>,
    /// (extended message, field number) → defining file.
    extensions: HashMap<(String, i32), usize>,
    services: Vec<String>,
}

/// Why a descriptor set cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum IndexError {
    /// The bytes are no `FileDescriptorSet`.
    Decode(String),
    /// Two files have the same name.
    DuplicateFile(String),
    /// A file imports one the set does not hold.
    MissingImport { file: String, import: String },
}

impl std::fmt::Display for IndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "cannot decode the file descriptor set: {e}"),
            Self::DuplicateFile(name) => write!(f, "file {name} appears twice"),
            Self::MissingImport { file, import } => {
                write!(f, "{file} imports {import}, which the set lacks")
            }
        }
    }
}

impl std::error::Error for IndexError {}

impl Reflection {
    /// Index an encoded `google.protobuf.FileDescriptorSet`, which must
    /// hold every file its files import.
    pub fn new(descriptor_set: &[u8]) -> Result<Self, IndexError> {
        let set = FileDescriptorSet::decode(descriptor_set)
            .map_err(|e| IndexError::Decode(e.to_string()))?;
        let mut r = Reflection {
            files: Vec::with_capacity(set.file.len()),
            by_name: HashMap::new(),
            symbols: HashMap::new(),
            extensions: HashMap::new(),
            services: Vec::new(),
        };
        for (i, file) in set.file.iter().enumerate() {
            let name = file.name().to_owned();
            if r.by_name.insert(name.clone(), i).is_some() {
                return Err(IndexError::DuplicateFile(name));
            }
            r.files.push(File {
                encoded: Bytes::from(file.encode_to_vec()),
                imports: Vec::new(),
            });
        }
        for (i, file) in set.file.iter().enumerate() {
            let mut imports = Vec::with_capacity(file.dependency.len());
            for dep in &file.dependency {
                let j = r
                    .by_name
                    .get(dep)
                    .copied()
                    .ok_or_else(|| IndexError::MissingImport {
                        file: file.name().to_owned(),
                        import: dep.clone(),
                    })?;
                imports.push(j);
            }
            if let Some(f) = r.files.get_mut(i) {
                f.imports = imports;
            }
            r.index_file(i, file);
        }
        Ok(r)
    }

    /// The services a client can list, in the set's order.
    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// A new reflection stream.
    pub fn session(&self) -> Session {
        Session {
            sent: vec![false; self.files.len()],
        }
    }

    fn index_file(&mut self, i: usize, file: &FileDescriptorProto) {
        let scope = file.package().to_owned();
        for service in &file.service {
            let name = qualify(&scope, service.name());
            for method in &service.method {
                self.symbol(qualify(&name, method.name()), i, Symbol::Other);
            }
            self.services.push(name.clone());
            self.symbol(name, i, Symbol::Other);
        }
        for message in &file.message_type {
            self.index_message(i, &scope, message);
        }
        for e in &file.enum_type {
            self.index_enum(i, &scope, e);
        }
        for ext in &file.extension {
            self.index_extension(i, &scope, ext);
        }
    }

    fn index_message(&mut self, i: usize, scope: &str, message: &DescriptorProto) {
        let name = qualify(scope, message.name());
        for field in &message.field {
            self.symbol(qualify(&name, field.name()), i, Symbol::Other);
        }
        for oneof in &message.oneof_decl {
            self.symbol(qualify(&name, oneof.name()), i, Symbol::Other);
        }
        for nested in &message.nested_type {
            self.index_message(i, &name, nested);
        }
        for e in &message.enum_type {
            self.index_enum(i, &name, e);
        }
        for ext in &message.extension {
            self.index_extension(i, &name, ext);
        }
        self.symbol(name, i, Symbol::Message);
    }

    /// An enum's values are named in the enum's enclosing scope, as
    /// protobuf scopes them (C++ style).
    fn index_enum(&mut self, i: usize, scope: &str, e: &EnumDescriptorProto) {
        for value in &e.value {
            self.symbol(qualify(scope, value.name()), i, Symbol::Other);
        }
        self.symbol(qualify(scope, e.name()), i, Symbol::Other);
    }

    fn index_extension(&mut self, i: usize, scope: &str, ext: &prost_types::FieldDescriptorProto) {
        let extendee = ext.extendee().trim_start_matches('.').to_owned();
        self.extensions.insert((extendee, ext.number()), i);
        self.symbol(qualify(scope, ext.name()), i, Symbol::Other);
    }

    fn symbol(&mut self, name: String, file: usize, kind: Symbol) {
        self.symbols.entry(name).or_insert((file, kind));
    }
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

/// One reflection stream's state: which files its client has.
#[derive(Debug)]
pub struct Session {
    sent: Vec<bool>,
}

impl Session {
    /// The answer to one request message of the stream: an encoded
    /// `ServerReflectionResponse` (an unknown name is an `error_response`
    /// in it, the stream goes on), or the status that ends the stream (a
    /// request that does not decode or asks nothing).
    pub fn answer(&mut self, reflection: &Reflection, request: &[u8]) -> Result<Vec<u8>, Status> {
        let req = ServerReflectionRequest::decode(request).map_err(|e| {
            Status::invalid_argument(format!(
                "cannot decode grpc.reflection.v1.ServerReflectionRequest: {e}"
            ))
        })?;
        let response = match &req.message_request {
            None => {
                return Err(Status::invalid_argument(
                    "the reflection request asks nothing (no message_request)",
                ))
            }
            Some(MessageRequest::ListServices(_)) => {
                MessageResponse::ListServicesResponse(ListServiceResponse {
                    service: reflection
                        .services
                        .iter()
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
            Some(MessageRequest::FileByFilename(name)) => match reflection.by_name.get(name) {
                Some(&i) => self.files(reflection, i),
                None => not_found(format!("no file named {name:?}")),
            },
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                match reflection.symbols.get(symbol) {
                    Some(&(i, _)) => self.files(reflection, i),
                    None => not_found(format!("no symbol {symbol:?}")),
                }
            }
            Some(MessageRequest::FileContainingExtension(ExtensionRequest {
                containing_type,
                extension_number,
            })) => match reflection
                .extensions
                .get(&(containing_type.clone(), *extension_number))
            {
                Some(&i) => self.files(reflection, i),
                None => not_found(format!(
                    "no extension {extension_number} of {containing_type:?}"
                )),
            },
            Some(MessageRequest::AllExtensionNumbersOfType(name)) => {
                match reflection.symbols.get(name) {
                    Some((_, Symbol::Message)) => {
                        let mut numbers: Vec<i32> = reflection
                            .extensions
                            .keys()
                            .filter(|(extendee, _)| extendee == name)
                            .map(|&(_, n)| n)
                            .collect();
                        numbers.sort_unstable();
                        MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                            base_type_name: name.clone(),
                            extension_number: numbers,
                        })
                    }
                    _ => not_found(format!("no message type {name:?}")),
                }
            }
        };
        Ok(ServerReflectionResponse {
            valid_host: req.host.clone(),
            original_request: Some(req),
            message_response: Some(response),
        }
        .encode_to_vec())
    }

    /// File `first` and the files it imports, directly or not, that this
    /// stream has not sent yet.
    fn files(&mut self, reflection: &Reflection, first: usize) -> MessageResponse {
        let mut out = Vec::new();
        let mut queue = VecDeque::from([first]);
        let mut seen = vec![false; reflection.files.len()];
        while let Some(i) = queue.pop_front() {
            let (Some(file), Some(seen_here)) = (reflection.files.get(i), seen.get_mut(i)) else {
                continue;
            };
            if std::mem::replace(seen_here, true) {
                continue;
            }
            let already = self
                .sent
                .get_mut(i)
                .map(|s| std::mem::replace(s, true))
                .unwrap_or(false);
            if i == first || !already {
                out.push(file.encoded.to_vec());
            }
            queue.extend(file.imports.iter().copied());
        }
        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
            file_descriptor_proto: out,
        })
    }
}

fn not_found(message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(ErrorResponse {
        error_code: Code::NotFound.as_u32() as i32,
        error_message: message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::FieldDescriptorProto;

    fn served() -> Reflection {
        Reflection::new(crisp_proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    fn ask(session: &mut Session, r: &Reflection, req: MessageRequest) -> MessageResponse {
        let request = ServerReflectionRequest {
            host: "h".into(),
            message_request: Some(req),
        };
        let bytes = session.answer(r, &request.encode_to_vec()).unwrap();
        let response = ServerReflectionResponse::decode(&bytes[..]).unwrap();
        assert_eq!(response.valid_host, "h");
        assert_eq!(response.original_request, Some(request));
        response.message_response.unwrap()
    }

    fn file_names(resp: &MessageResponse) -> Vec<String> {
        let MessageResponse::FileDescriptorResponse(f) = resp else {
            panic!("not files: {resp:?}");
        };
        f.file_descriptor_proto
            .iter()
            .map(|b| {
                FileDescriptorProto::decode(&b[..])
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect()
    }

    fn error_code(resp: &MessageResponse) -> i32 {
        match resp {
            MessageResponse::ErrorResponse(e) => e.error_code,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn lists_every_service_served() {
        let r = served();
        let MessageResponse::ListServicesResponse(list) = ask(
            &mut r.session(),
            &r,
            MessageRequest::ListServices(String::new()),
        ) else {
            panic!("not a list");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "runtime.v1.RuntimeService",
                "runtime.v1.ImageService",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ]
        );
    }

    #[test]
    fn finds_the_file_of_every_kind_of_symbol() {
        let r = served();
        for symbol in [
            "runtime.v1.RuntimeService",
            "runtime.v1.RuntimeService.CreateContainer",
            "runtime.v1.CreateContainerRequest",
            "runtime.v1.CreateContainerRequest.pod_sandbox_id",
            "runtime.v1.ContainerState",
            "runtime.v1.CONTAINER_RUNNING",
            "runtime.v1.ImageService.PullImage",
        ] {
            let files = file_names(&ask(
                &mut r.session(),
                &r,
                MessageRequest::FileContainingSymbol(symbol.into()),
            ));
            assert_eq!(files, ["runtime/v1/api.proto"], "{symbol}");
        }
        for (symbol, file) in [
            (
                "grpc.health.v1.HealthCheckResponse.ServingStatus",
                "grpc/health/v1/health.proto",
            ),
            (
                "grpc.health.v1.HealthCheckResponse.SERVING",
                "grpc/health/v1/health.proto",
            ),
            (
                "grpc.health.v1.HealthListResponse.StatusesEntry",
                "grpc/health/v1/health.proto",
            ),
            (
                "grpc.reflection.v1alpha.ServerReflectionRequest.message_request",
                "grpc/reflection/v1alpha/reflection.proto",
            ),
        ] {
            let files = file_names(&ask(
                &mut r.session(),
                &r,
                MessageRequest::FileContainingSymbol(symbol.into()),
            ));
            assert_eq!(files, [file], "{symbol}");
        }
    }

    #[test]
    fn unknown_names_are_not_found_and_the_stream_goes_on() {
        let r = served();
        let mut s = r.session();
        for req in [
            MessageRequest::FileContainingSymbol("runtime.v1.Nope".into()),
            MessageRequest::FileContainingSymbol(".runtime.v1.RuntimeService".into()),
            MessageRequest::FileByFilename("api.proto".into()),
            MessageRequest::AllExtensionNumbersOfType("runtime.v1.RuntimeService".into()),
            MessageRequest::FileContainingExtension(ExtensionRequest {
                containing_type: "runtime.v1.VersionRequest".into(),
                extension_number: 100,
            }),
        ] {
            assert_eq!(error_code(&ask(&mut s, &r, req)), 5);
        }
        let files = file_names(&ask(
            &mut s,
            &r,
            MessageRequest::FileByFilename("runtime/v1/api.proto".into()),
        ));
        assert_eq!(files, ["runtime/v1/api.proto"]);
    }

    #[test]
    fn a_message_without_extensions_has_none() {
        let r = served();
        let resp = ask(
            &mut r.session(),
            &r,
            MessageRequest::AllExtensionNumbersOfType("runtime.v1.VersionRequest".into()),
        );
        assert_eq!(
            resp,
            MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                base_type_name: "runtime.v1.VersionRequest".into(),
                extension_number: vec![],
            })
        );
    }

    #[test]
    fn bad_requests_end_the_stream() {
        let r = served();
        let mut s = r.session();
        let err = s.answer(&r, &[0x1a, 0x09, b'x']).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        let err = s
            .answer(&r, &ServerReflectionRequest::default().encode_to_vec())
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
    }

    /// a.proto imports b.proto, which imports c.proto; c defines an
    /// extension of a message of a.
    fn chain() -> Reflection {
        let message = |name: &str| DescriptorProto {
            name: Some(name.into()),
            ..Default::default()
        };
        let file = |name: &str, deps: &[&str], msg: &str| FileDescriptorProto {
            name: Some(name.into()),
            package: Some("p".into()),
            dependency: deps.iter().map(|d| (*d).to_owned()).collect(),
            message_type: vec![message(msg)],
            ..Default::default()
        };
        let mut c = file("c.proto", &[], "C");
        c.extension.push(FieldDescriptorProto {
            name: Some("note".into()),
            number: Some(1000),
            extendee: Some(".p.A".into()),
            label: Some(Label::Optional as i32),
            r#type: Some(Type::String as i32),
            ..Default::default()
        });
        let set = FileDescriptorSet {
            file: vec![
                c,
                file("b.proto", &["c.proto"], "B"),
                file("a.proto", &["b.proto", "c.proto"], "A"),
            ],
        };
        Reflection::new(&set.encode_to_vec()).unwrap()
    }

    #[test]
    fn imports_come_along_once_per_stream() {
        let r = chain();
        let mut s = r.session();
        let first = file_names(&ask(
            &mut s,
            &r,
            MessageRequest::FileContainingSymbol("p.A".into()),
        ));
        assert_eq!(first, ["a.proto", "b.proto", "c.proto"]);
        let again = file_names(&ask(
            &mut s,
            &r,
            MessageRequest::FileContainingSymbol("p.B".into()),
        ));
        assert_eq!(
            again,
            ["b.proto"],
            "the file asked for, always; its imports once"
        );
        let fresh = file_names(&ask(
            &mut r.session(),
            &r,
            MessageRequest::FileByFilename("b.proto".into()),
        ));
        assert_eq!(fresh, ["b.proto", "c.proto"]);
    }

    #[test]
    fn extensions_are_found() {
        let r = chain();
        let mut s = r.session();
        let files = file_names(&ask(
            &mut s,
            &r,
            MessageRequest::FileContainingExtension(ExtensionRequest {
                containing_type: "p.A".into(),
                extension_number: 1000,
            }),
        ));
        assert_eq!(files, ["c.proto"]);
        assert_eq!(
            ask(
                &mut s,
                &r,
                MessageRequest::AllExtensionNumbersOfType("p.A".into())
            ),
            MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                base_type_name: "p.A".into(),
                extension_number: vec![1000],
            })
        );
        assert_eq!(
            file_names(&ask(
                &mut s,
                &r,
                MessageRequest::FileContainingSymbol("p.note".into())
            )),
            ["c.proto"]
        );
    }

    #[test]
    fn a_set_missing_an_import_is_refused() {
        let set = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("a.proto".into()),
                dependency: vec!["gone.proto".into()],
                ..Default::default()
            }],
        };
        assert_eq!(
            Reflection::new(&set.encode_to_vec()).unwrap_err(),
            IndexError::MissingImport {
                file: "a.proto".into(),
                import: "gone.proto".into()
            }
        );
        assert!(matches!(
            Reflection::new(&[0xff]).unwrap_err(),
            IndexError::Decode(_)
        ));
    }
}
