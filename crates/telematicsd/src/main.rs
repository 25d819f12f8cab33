//! The telematics daemon.
fn main() {}
