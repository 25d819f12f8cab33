//! Live counters shared by the runtime's tasks with the daemon (admin status, watchdog, tests).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters shared with the daemon (status, watchdog, tests).
#[derive(Debug, Default)]
pub struct Health {
    /// Last core loop iteration (monotonic ms of [`Clock`](super::Clock)).
    pub heartbeat_ms: AtomicU64,
    /// Frames received from the bus.
    pub frames: AtomicU64,
    /// Frames dropped because the core fell behind (flood).
    pub frames_dropped: AtomicU64,
    /// Frames the core decoded (the CAN reader counts received ones in `frames`).
    pub frames_processed: AtomicU64,
    /// CAN (re)connections.
    pub can_connects: AtomicU64,
    /// Commands verified (accepted by the security layer).
    pub commands_verified: AtomicU64,
    /// Commands refused by the security layer.
    pub commands_refused: AtomicU64,
    /// Messages enqueued in the outbox.
    pub enqueued: AtomicU64,
    /// Outbox write failures (disk full, I/O).
    pub enqueue_failures: AtomicU64,
    /// Failed writes of durable state (commits, security state). redb refuses every later
    /// transaction after an I/O error until the file is reopened, so the first one stops the
    /// core with `store.write_failed` and systemd restarts the daemon (fail closed: nothing is
    /// executed on state that cannot be made durable).
    pub store_failures: AtomicU64,
    /// Mapped signals (VSS paths), set once a second.
    pub signals_mapped: AtomicU64,
    /// Mapped signals with a fresh value (not older than their `max_age_ms`), set once a
    /// second.
    pub signals_fresh: AtomicU64,
    /// Frames received per bus (configuration order), after the kernel filter: what reached
    /// the daemon. Empty for a `Health::default()`.
    pub bus_frames: Vec<(String, AtomicU64)>,
}

impl Health {
    /// Counters for these buses (names in configuration order).
    pub fn with_buses(names: &[String]) -> Self {
        Health {
            bus_frames: names
                .iter()
                .map(|n| (n.clone(), AtomicU64::new(0)))
                .collect(),
            ..Health::default()
        }
    }

    /// The received-frames counter of `bus`.
    pub fn bus_counter(&self, bus: crate::vehicle::BusId) -> Option<&AtomicU64> {
        self.bus_frames.get(bus.0).map(|(_, c)| c)
    }

    /// Counts a failed durable write and logs it with the stable code.
    pub fn store_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(code = "store.write_failed", what, error = %error, "durable write failed");
    }
}
