//! gRPC over HTTP/2 (the gRPC PROTOCOL-HTTP2 specification).
