//! The in-band renewal state machine (sans-IO, times in ms passed in, effects returned).
//!
//! ```text
//!  Idle ──due──▶ GenerateKey ──key_generated──▶ Awaiting ──certificate──▶ Check
//!                                  ▲  │ (retry: PublishCsr again)          │
//!                                  │  └──────── refused (Outcome) ◀────────┤
//!                                  │                                       ▼ ok
//!                                  └── probe refused (Outcome, retry) ◀─ Proving ──ok──▶ Commit
//!  committed ──▶ Outcome renewed + Renewed ──▶ Idle (generation + 1)
//! ```
//!
//! The committed identity stays in force until [`Effect::Commit`] is carried out; the shell
//! makes every step durable before it reports it back, so a restart resumes from what is on
//! disk ([`Resume`]).

use super::Refusal;

/// What a restart finds on disk for the next generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// Its key exists.
    pub key: bool,
    /// Its certificate was received, checked and stored (PEM), not yet committed.
    pub cert: Option<Vec<u8>>,
}

/// Effects for the shell, carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Generate (durably) the key of `generation`, then call [`Renewal::key_generated`].
    GenerateKey {
        /// The new generation.
        generation: u64,
    },
    /// Publish (retained) the CSR of `generation`'s key on `identity/csr`.
    PublishCsr {
        /// The new generation.
        generation: u64,
    },
    /// Check `pem` against the pinned CAs, the key, the VIN and the clock, then call
    /// [`Renewal::checked`].
    Check {
        /// The new generation.
        generation: u64,
        /// The certificate (chain) as received.
        pem: Vec<u8>,
    },
    /// Store (durably) the checked certificate of `generation`.
    StoreCert {
        /// The new generation.
        generation: u64,
        /// The certificate (chain).
        pem: Vec<u8>,
    },
    /// Connect once with `generation`'s key and certificate, then call [`Renewal::probed`].
    Probe {
        /// The new generation.
        generation: u64,
    },
    /// Make `generation` the identity in force (one atomic rename), then call
    /// [`Renewal::committed`].
    Commit {
        /// The new generation.
        generation: u64,
    },
    /// Publish the outcome on `identity/outcome` (and log it).
    Outcome {
        /// The generation it is about.
        generation: u64,
        /// `None`: renewed.
        refused: Option<Refusal>,
        /// Serial of the certificate judged, if readable.
        serial: Option<String>,
    },
    /// `generation` is in force: switch the link, raise `certificate_renewed`, check expiry.
    Renewed {
        /// The committed generation.
        generation: u64,
        /// Its serial.
        serial: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    /// Key being generated.
    Keying,
    /// CSR out, waiting for the certificate; `csr_at` = when it was last published.
    Awaiting {
        csr_at: u64,
    },
    /// A certificate is being checked.
    Checking,
    /// Stored certificate being proven; `probe_at` = when the last probe started.
    Proving {
        serial: Option<String>,
        probe_at: u64,
    },
    /// Commit in progress.
    Committing {
        serial: Option<String>,
    },
}

/// One renewal at a time, for generation `committed + 1`.
#[derive(Debug, Clone)]
pub struct Renewal {
    committed: u64,
    retry_ms: u64,
    state: State,
}

impl Renewal {
    /// A machine whose identity in force is `committed`, resuming what `resume` found on disk
    /// for `committed + 1` at `now`. `retry_ms`: CSR re-publication and probe retry interval.
    pub fn new(committed: u64, resume: Resume, retry_ms: u64, now: u64) -> (Self, Vec<Effect>) {
        let mut r = Renewal {
            committed,
            retry_ms,
            state: State::Idle,
        };
        let effects = if let Some(pem) = resume.cert {
            // Checked before the crash, but time passed: check again, then prove.
            r.state = State::Checking;
            vec![Effect::Check {
                generation: r.next(),
                pem,
            }]
        } else if resume.key {
            r.state = State::Awaiting { csr_at: now };
            vec![Effect::PublishCsr {
                generation: r.next(),
            }]
        } else {
            Vec::new()
        };
        (r, effects)
    }

    /// The identity generation in force.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The generation a renewal works on.
    pub fn next(&self) -> u64 {
        self.committed + 1
    }

    /// `true` while a renewal is in progress.
    pub fn in_progress(&self) -> bool {
        self.state != State::Idle
    }

    /// When [`Renewal::tick`] next has something to do (`None`: only on `due`).
    pub fn next_deadline(&self) -> Option<u64> {
        match self.state {
            State::Awaiting { csr_at } => Some(csr_at.saturating_add(self.retry_ms)),
            State::Proving { probe_at, .. } => Some(probe_at.saturating_add(self.retry_ms)),
            _ => None,
        }
    }

    /// Timer / expiry check: starts a renewal when `due` (the window is open), re-publishes
    /// the CSR or re-probes after the retry interval.
    pub fn tick(&mut self, now: u64, due: bool) -> Vec<Effect> {
        let generation = self.next();
        let late = self.next_deadline().is_some_and(|d| now >= d);
        match &mut self.state {
            State::Idle if due => {
                self.state = State::Keying;
                vec![Effect::GenerateKey { generation }]
            }
            State::Awaiting { csr_at } if late => {
                *csr_at = now;
                vec![Effect::PublishCsr { generation }]
            }
            State::Proving { probe_at, .. } if late => {
                *probe_at = now;
                vec![Effect::Probe { generation }]
            }
            _ => Vec::new(),
        }
    }

    /// The key of the next generation is durable.
    pub fn key_generated(&mut self, now: u64) -> Vec<Effect> {
        if self.state != State::Keying {
            return Vec::new();
        }
        self.state = State::Awaiting { csr_at: now };
        vec![Effect::PublishCsr {
            generation: self.next(),
        }]
    }

    /// A certificate arrived on `identity/certificate`. Accepted while waiting for one or
    /// proving a previous one (the back end may correct itself); refused otherwise.
    pub fn certificate(&mut self, pem: Vec<u8>) -> Vec<Effect> {
        let generation = self.next();
        match self.state {
            State::Awaiting { .. } | State::Proving { .. } => {
                self.state = State::Checking;
                vec![Effect::Check { generation, pem }]
            }
            _ => vec![Effect::Outcome {
                generation,
                refused: Some(Refusal::Unexpected),
                serial: None,
            }],
        }
    }

    /// The verdict of [`Effect::Check`]: `Ok(serial)` or the refusal (and the serial if it
    /// could be read).
    pub fn checked(
        &mut self,
        pem: Vec<u8>,
        verdict: Result<String, (Refusal, Option<String>)>,
        now: u64,
    ) -> Vec<Effect> {
        if self.state != State::Checking {
            return Vec::new();
        }
        let generation = self.next();
        match verdict {
            Ok(serial) => {
                self.state = State::Proving {
                    serial: Some(serial),
                    probe_at: now,
                };
                vec![
                    Effect::StoreCert { generation, pem },
                    Effect::Probe { generation },
                ]
            }
            Err((refusal, serial)) => {
                // Keep waiting: the CSR stands, the back end may answer again.
                self.state = State::Awaiting { csr_at: now };
                vec![Effect::Outcome {
                    generation,
                    refused: Some(refusal),
                    serial,
                }]
            }
        }
    }

    /// The result of [`Effect::Probe`].
    pub fn probed(&mut self, ok: bool) -> Vec<Effect> {
        let State::Proving { serial, .. } = &self.state else {
            return Vec::new();
        };
        let (generation, serial) = (self.next(), serial.clone());
        if ok {
            self.state = State::Committing {
                serial: serial.clone(),
            };
            vec![Effect::Commit { generation }]
        } else {
            // Stays Proving: probed again after the retry interval (the broker may have been
            // unreachable); a new certificate may arrive meanwhile.
            vec![Effect::Outcome {
                generation,
                refused: Some(Refusal::ProbeFailed),
                serial,
            }]
        }
    }

    /// A step could not be carried out (I/O): the renewal stops; the next due
    /// [`Renewal::tick`] starts it again with a new key.
    pub fn abandon(&mut self) {
        self.state = State::Idle;
    }

    /// [`Effect::Commit`] is durable: the new generation is in force.
    pub fn committed_now(&mut self) -> Vec<Effect> {
        let State::Committing { serial } = &self.state else {
            return Vec::new();
        };
        let serial = serial.clone();
        self.committed += 1;
        self.state = State::Idle;
        vec![
            Effect::Outcome {
                generation: self.committed,
                refused: None,
                serial: serial.clone(),
            },
            Effect::Renewed {
                generation: self.committed,
                serial,
            },
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const RETRY: u64 = 60_000;

    fn pem() -> Vec<u8> {
        b"-----BEGIN CERTIFICATE-----".to_vec()
    }

    #[test]
    fn a_renewal_runs_key_csr_check_store_probe_commit_in_order() {
        let (mut r, fx) = Renewal::new(3, Resume::default(), RETRY, 0);
        assert!(fx.is_empty());
        assert!(r.tick(1_000, false).is_empty(), "not due: nothing");
        assert_eq!(r.tick(2_000, true), [Effect::GenerateKey { generation: 4 }]);
        assert!(r.tick(3_000, true).is_empty(), "one renewal at a time");
        assert_eq!(
            r.key_generated(3_000),
            [Effect::PublishCsr { generation: 4 }]
        );
        assert_eq!(r.next_deadline(), Some(3_000 + RETRY));
        assert_eq!(
            r.certificate(pem()),
            [Effect::Check {
                generation: 4,
                pem: pem()
            }]
        );
        assert_eq!(
            r.checked(pem(), Ok("0a".into()), 5_000),
            [
                Effect::StoreCert {
                    generation: 4,
                    pem: pem()
                },
                Effect::Probe { generation: 4 }
            ]
        );
        assert_eq!(r.committed(), 3, "old identity in force until the commit");
        assert_eq!(r.probed(true), [Effect::Commit { generation: 4 }]);
        assert_eq!(r.committed(), 3);
        let fx = r.committed_now();
        assert_eq!(
            fx,
            [
                Effect::Outcome {
                    generation: 4,
                    refused: None,
                    serial: Some("0a".into())
                },
                Effect::Renewed {
                    generation: 4,
                    serial: Some("0a".into())
                }
            ]
        );
        assert_eq!((r.committed(), r.in_progress()), (4, false));
        assert_eq!(
            r.certificate(pem()),
            [Effect::Outcome {
                generation: 5,
                refused: Some(Refusal::Unexpected),
                serial: None
            }],
            "a certificate nobody asked for is refused"
        );
    }

    #[test]
    fn refusals_keep_waiting_and_the_csr_is_republished_in_virtual_time() {
        let (mut r, _) = Renewal::new(0, Resume::default(), RETRY, 0);
        r.tick(0, true);
        r.key_generated(10);
        for refusal in [
            Refusal::KeyMismatch,
            Refusal::VinMismatch,
            Refusal::Untrusted,
        ] {
            r.certificate(pem());
            assert_eq!(
                r.checked(pem(), Err((refusal, Some("1".into()))), 20),
                [Effect::Outcome {
                    generation: 1,
                    refused: Some(refusal),
                    serial: Some("1".into())
                }]
            );
            assert_eq!(r.committed(), 0);
        }
        assert!(r.tick(20 + RETRY - 1, false).is_empty());
        assert_eq!(
            r.tick(20 + RETRY, false),
            [Effect::PublishCsr { generation: 1 }]
        );
        assert!(r.tick(20 + RETRY + 1, true).is_empty());
    }

    #[test]
    fn a_failed_probe_is_reported_and_retried_and_a_new_certificate_may_replace_it() {
        let (mut r, _) = Renewal::new(0, Resume::default(), RETRY, 0);
        r.tick(0, true);
        r.key_generated(0);
        r.certificate(pem());
        r.checked(pem(), Ok("a".into()), 100);
        assert_eq!(
            r.probed(false),
            [Effect::Outcome {
                generation: 1,
                refused: Some(Refusal::ProbeFailed),
                serial: Some("a".into())
            }]
        );
        assert_eq!(r.committed(), 0);
        assert!(r.tick(100 + RETRY - 1, false).is_empty());
        assert_eq!(
            r.tick(100 + RETRY, false),
            [Effect::Probe { generation: 1 }]
        );
        assert_eq!(
            r.certificate(pem()).len(),
            1,
            "a corrected certificate is checked"
        );
        assert!(
            r.probed(true).is_empty(),
            "stale probe result ignored while checking"
        );
    }

    #[test]
    fn a_restart_resumes_from_what_is_on_disk() {
        let (r, fx) = Renewal::new(
            2,
            Resume {
                key: true,
                cert: None,
            },
            RETRY,
            7,
        );
        assert_eq!(fx, [Effect::PublishCsr { generation: 3 }]);
        assert!(r.in_progress());
        let (mut r, fx) = Renewal::new(
            2,
            Resume {
                key: true,
                cert: Some(pem()),
            },
            RETRY,
            7,
        );
        assert_eq!(
            fx,
            [Effect::Check {
                generation: 3,
                pem: pem()
            }]
        );
        // The stored certificate expired meanwhile: refused, back to waiting for a new one.
        let fx = r.checked(pem(), Err((Refusal::Expired, None)), 8);
        assert!(matches!(
            fx.as_slice(),
            [Effect::Outcome {
                refused: Some(Refusal::Expired),
                ..
            }]
        ));
        assert_eq!(r.next_deadline(), Some(8 + RETRY));
        assert!(r.key_generated(9).is_empty(), "out-of-order input ignored");
        assert!(r.committed_now().is_empty());
    }
}
