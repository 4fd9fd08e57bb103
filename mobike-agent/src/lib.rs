//! IKEv2 + MOBIKE endpoint (placeholder until the mobike-agent issue lands).
