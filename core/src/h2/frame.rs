//! HTTP/2 frames: parsing and encoding (RFC 9113 §4, §6).
