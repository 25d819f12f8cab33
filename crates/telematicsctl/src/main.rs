//! Owner / back-end / dealer tool for telematicsd.
fn main() {}
