//! The trigger model: checked domain types for everything the daemon stores,
//! fans out and prints.
//!
//! The PF_TRIGGER types come from draft-schilcher-mobike-trigger-api-03 §4,
//! the link events from IEEE 802.21-2008 §7.3 (MIH_LINK_SAP). The parts:
//!
//! - [`enums`]: trigger types, sources, link types, reason code books and
//!   the other enumerations, each with one kebab-case name per value;
//! - [`time`]: [`Timestamp`], nanoseconds since the Unix epoch;
//! - [`trigger`]: [`Trigger`], its parts and typed parameters ([`Detail`]),
//!   and the rules of which fields a trigger type needs;
//! - [`filter`]: [`Filter`], which triggers a request applies to;
//! - [`validation`]: [`ValidationError`], naming the field of an external
//!   input that was wrong, and the checks shared by every input;
//! - [`json`]: the JSON form `triggerctl --json` prints and `triggerctl add
//!   --from` reads.
//!
//! A value of these types has been checked: external input reaches them
//! only through [`crate::wire`] (the `trigger.v1` messages, whose
//! problems are [`ValidationError`]s naming the field, never panics) or the
//! JSON form. This module knows nothing of protobuf, gRPC or SQLite.

pub mod enums;
pub mod filter;
pub mod json;
pub mod time;
pub mod trigger;
pub mod validation;

pub use self::{
    enums::{
        AddressFlag, InterfaceKind, LinkParameterType, LinkType, OperState, ParameterUnit,
        ReasonSpace, Source, TriggerType, link_down_reason, link_going_down_reason,
    },
    filter::{Filter, MAX_FILTER_ENTRIES},
    time::Timestamp,
    trigger::{
        Address, Connectivity, DefaultRoute, Detail, Handover, Interface, LinkParameter, LinkState,
        MAX_PARAMETERS, Reason, Resync, Trigger,
    },
    validation::{FieldPath, MAX_INTERFACE_NAME, Sub, ValidationError, check_name},
};
