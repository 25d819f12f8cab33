//! Fault-injection suite (issue 6).
