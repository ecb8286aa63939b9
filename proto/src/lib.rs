//! The CRI v1 schema (`runtime.v1`), the gRPC health and reflection
//! services crispd serves beside it, and their generated prost types.
//!
//! * [`cri`] (an alias of [`runtime::v1`]) holds one Rust type per message
//!   and enum of `runtime/v1/api.proto`.
//! * [`grpc::health::v1`] and [`grpc::reflection::v1`] (and its `v1alpha`
//!   twin) are gRPC's standard health and server reflection services.
//! * [`methods`] is the table of every rpc served: the 41 of
//!   `RuntimeService` and `ImageService`, then health and reflection,
//!   looked up by HTTP/2 `:path`.
//! * [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of all of them,
//!   for server reflection.

pub mod methods;

/// Generated code, one module per proto package.
pub mod runtime {
    /// Package `runtime.v1`.
    #[allow(clippy::all, missing_docs, rustdoc::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
    }
}

/// gRPC's own services, one module per proto package.
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod grpc {
    /// Package `grpc.health.v1`.
    pub mod health {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
        }
    }
    /// Packages `grpc.reflection.v1` and `grpc.reflection.v1alpha`.
    pub mod reflection {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1.rs"));
        }
        pub mod v1alpha {
            include!(concat!(env!("OUT_DIR"), "/grpc.reflection.v1alpha.rs"));
        }
    }
}

pub use runtime::v1 as cri;

/// The encoded `google.protobuf.FileDescriptorSet` of `runtime/v1/api.proto`
/// and the health and reflection protos under `grpc/` (with source info),
/// as compiled at build time.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// The proto package of the schema.
pub const PACKAGE: &str = "runtime.v1";
