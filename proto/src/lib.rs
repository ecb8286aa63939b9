//! The CRI v1 schema and its generated prost types.
