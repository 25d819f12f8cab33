//! Sans-IO remote command security: pairing, COSE command envelopes, verification, lockout,
//! recovery, audit, and the client side.
//!
//! Only this crate can construct a [`VerifiedCommand`].

pub mod command;

pub use command::{Action, CommandId, KeyId, VerifiedCommand};
