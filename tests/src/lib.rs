//! Support code for the end-to-end tests (see it/main.rs).
