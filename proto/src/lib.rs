//! The trigger database's gRPC API, package `trigger.v1`: messages, the
//! `TriggerService` client and server, and the encoded file descriptor set
//! for server reflection.
//!
//! This crate is generated code only (prost + tonic, compiled by protox in
//! `build.rs`, so no system `protoc` is needed). It does not validate
//! anything: the daemon's gRPC adapter turns these messages into checked
//! domain types and answers bad fields with `INVALID_ARGUMENT`.

/// `trigger.v1`: the PF_TRIGGER verbs (draft-schilcher-mobike-trigger-api-03)
/// and IEEE 802.21 link events.
pub mod v1 {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("trigger.v1");
}

/// `mobike.v1`: mobike-agent's local control API (`AgentControl`: status
/// of IKE SAs and CHILD_SAs).
pub mod mobike_v1 {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("mobike.v1");
}

/// Encoded `FileDescriptorSet` of every `.proto` in this crate, for
/// `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
