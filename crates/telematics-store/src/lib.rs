//! Crash-safe durable state (redb): key/value records and the bounded, prioritised MQTT outbox.
