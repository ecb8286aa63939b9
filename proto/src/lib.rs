//! The CRI v1 schema (`runtime.v1`) and its generated prost types.
//!
//! * [`cri`] (an alias of [`runtime::v1`]) holds one Rust type per message
//!   and enum of `runtime/v1/api.proto`.
//! * [`methods`] is the table of the 41 rpcs of `RuntimeService` and
//!   `ImageService`, looked up by HTTP/2 `:path`.
//! * [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of the schema,
//!   for reflection.

pub mod methods;

/// Generated code, one module per proto package.
pub mod runtime {
    /// Package `runtime.v1`.
    #[allow(clippy::all, missing_docs, rustdoc::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
    }
}

pub use runtime::v1 as cri;

/// The encoded `google.protobuf.FileDescriptorSet` of `runtime/v1/api.proto`
/// (with source info), as compiled at build time.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));

/// The proto package of the schema.
pub const PACKAGE: &str = "runtime.v1";
