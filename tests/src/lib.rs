//! Support for the cross-crate system tests: network namespaces that clean up
//! after themselves, the daemons started as real processes, and gRPC clients
//! over their Unix sockets. It is test scaffolding, not product code.
