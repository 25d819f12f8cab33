//! The I/O shell of the certificate lifecycle: one tokio task that checks the validity of the
//! identity in force at start and daily, raises `certificate_expiring`, runs the
//! [`Renewal`] machine's effects (files, outbox, probe connection, link switch) and feeds it
//! the certificates received on `vehicles/{vin}/identity/certificate`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telematics_keystore::SigningKey;
use telematics_link::{LinkConfig, LinkHandle, TlsFiles, certificate_facts_of_file, topics};
use telematics_store::{OutboxMessage, Priority};
use telematics_telemetry::{Alert, AlertState, RenewalOutcome, SignalValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::check::{Expected, check};
use super::expiry::Policy;
use super::keys::KeyBackend;
use super::renewal::{Effect, Renewal};
use super::store::IdentityStore;
use super::{ALERT_CERT_EXPIRING, ALERT_CERT_RENEWED};
use crate::error::DaemonError;
use crate::failpoint::{Crash, hit};

const DAY_MS: u64 = 86_400_000;
/// How long the probe connection may take to be accepted.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The identity line of the admin status (`certificate` component), shared with the admin
/// handler.
#[derive(Debug, Default)]
pub struct IdentityStatus(Mutex<String>);

impl IdentityStatus {
    /// The current line.
    pub fn text(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn set(&self, text: String) {
        if let Ok(mut s) = self.0.lock() {
            *s = text;
        }
    }
}

/// Everything the lifecycle task needs.
pub struct Identity {
    /// VIN (= certificate CN).
    pub vin: String,
    /// The link whose identity this is (publishes, switch).
    pub link: LinkHandle,
    /// The link's configuration (host, port, client id of the probe connection).
    pub link_config: LinkConfig,
    /// The identity files.
    pub store: IdentityStore,
    /// The key backend.
    pub keys: Arc<dyn KeyBackend>,
    /// Renewal / warning windows.
    pub policy: Policy,
    /// CSR re-publication and probe retry interval, ms.
    pub retry_ms: u64,
    /// Shared status line.
    pub status: Arc<IdentityStatus>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("vin", &self.vin)
            .finish_non_exhaustive()
    }
}

/// The identity in force at start.
#[derive(Clone)]
pub struct Committed {
    /// The committed generation (0: the configured files).
    pub generation: u64,
    /// Its certificate (and key file, files backend).
    pub files: TlsFiles,
    /// Its key when not a file (token).
    pub key: Option<Arc<dyn SigningKey>>,
}

/// The identity in force at start: the committed generation, its files and key (loaded by the
/// link next). A token key promotion interrupted after the commit (kill -9) is finished first,
/// so that the key matches the committed certificate. An unreadable commit record fails closed.
pub fn committed_identity(
    store: &IdentityStore,
    keys: &dyn KeyBackend,
) -> Result<Committed, DaemonError> {
    let generation = store.committed()?;
    let files = store.files(generation, keys);
    if generation > 0 {
        let cert = certificate_facts_of_file(&files.cert_chain)
            .map_err(|e| DaemonError::Identity(e.to_string()))?;
        if keys.finish_promotion(&cert.spki)? {
            tracing::info!(
                generation,
                "certificate renewal: key promotion finished after a restart"
            );
        }
    }
    Ok(Committed {
        generation,
        files,
        key: keys.current_key(
            (generation > 0)
                .then(|| store.generation_dir(generation))
                .as_deref(),
        )?,
    })
}

fn wall_ms() -> u64 {
    crate::security::unix_now_s().saturating_mul(1000)
}

impl Identity {
    /// Runs until `shutdown`; `certificates` carries the payloads of
    /// `vehicles/{vin}/identity/certificate`.
    pub async fn run(self, mut certificates: mpsc::Receiver<Vec<u8>>, shutdown: CancellationToken) {
        let committed = match self.store.committed() {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(code = e.code(), error = %e, "identity: no renewal");
                return;
            }
        };
        let resume = self.store.resume(committed + 1, self.keys.as_ref());
        if resume.key {
            tracing::info!(
                generation = committed + 1,
                "resuming the certificate renewal"
            );
        }
        let (mut machine, effects) = Renewal::new(committed, resume, self.retry_ms, wall_ms());
        let mut queue: VecDeque<Effect> = effects.into();
        let mut next_check = 0;
        loop {
            let now = wall_ms();
            let mut due = false;
            if now >= next_check {
                next_check = now.saturating_add(DAY_MS);
                due = self.check_expiry(machine.committed(), now);
            }
            queue.extend(machine.tick(now, due));
            if !self.drain(&mut queue, &mut machine).await {
                next_check = next_check.min(now.saturating_add(self.retry_ms));
            }
            self.show(&machine);
            let wake = machine
                .next_deadline()
                .map_or(next_check, |d| d.min(next_check));
            let sleep = Duration::from_millis(wake.saturating_sub(wall_ms()).max(1));
            tokio::select! {
                () = shutdown.cancelled() => return,
                pem = certificates.recv() => match pem {
                    Some(pem) => queue.extend(machine.certificate(pem)),
                    None => return,
                },
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Carries out the queued effects in order; on a failed step the renewal is abandoned (it
    /// starts again from a new key at the next check) and `false` is returned.
    async fn drain(&self, queue: &mut VecDeque<Effect>, machine: &mut Renewal) -> bool {
        while let Some(effect) = queue.pop_front() {
            match self.carry(effect, machine).await {
                Ok(more) => queue.extend(more),
                Err(e) => {
                    tracing::error!(code = e.code(), error = %e, "certificate renewal step failed; retried later");
                    machine.abandon();
                    queue.clear();
                    return false;
                }
            }
        }
        true
    }

    /// Reads the validity of `generation`'s certificate, logs and alerts; returns whether the
    /// renewal window is open.
    fn check_expiry(&self, generation: u64, now_ms: u64) -> bool {
        let files = self.store.files(generation, self.keys.as_ref());
        let facts = match certificate_facts_of_file(&files.cert_chain) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(code = e.code(), error = %e, "cannot read the client certificate's validity");
                return false;
            }
        };
        let e = self.policy.check(facts.validity, now_ms / 1000);
        tracing::info!(
            generation,
            serial = %facts.serial,
            days_left = e.days_left,
            phase = ?e.phase,
            "client certificate validity checked"
        );
        if e.warn {
            tracing::error!(
                code = "identity.expiring",
                days_left = e.days_left,
                phase = ?e.phase,
                "the client certificate expires soon or is not valid: renew it"
            );
            self.alert(ALERT_CERT_EXPIRING, SignalValue::Int(e.days_left), now_ms);
        }
        self.status.set(format!(
            "generation={generation} serial={} sha256={} not_after={} days_left={} phase={:?}",
            facts.serial, facts.sha256, facts.validity.not_after, e.days_left, e.phase
        ));
        e.renew
    }

    fn show(&self, machine: &Renewal) {
        let base = self.status.text();
        let base = base
            .split(" renewal=")
            .next()
            .unwrap_or_default()
            .to_string();
        let renewal = if machine.in_progress() {
            format!("in_progress(generation {})", machine.next())
        } else {
            "idle".into()
        };
        self.status.set(format!("{base} renewal={renewal}"));
    }

    fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        priority: Priority,
        retain: bool,
    ) -> Result<(), DaemonError> {
        let mut msg = OutboxMessage::new(topic, payload, priority);
        msg.retain = retain;
        self.link
            .publish(&msg)
            .map(|_| ())
            .map_err(|e| DaemonError::Identity(format!("outbox: {e}")))
    }

    fn alert(&self, kind: &str, value: SignalValue, now_ms: u64) {
        let alert = Alert {
            vin: self.vin.clone(),
            at: now_ms,
            kind: kind.into(),
            signal: None,
            state: AlertState::Raised,
            value: Some(value),
            threshold: None,
            count: None,
            device: None,
            until: None,
        };
        let sent = alert
            .encode()
            .map_err(|e| DaemonError::Identity(e.to_string()))
            .and_then(|b| self.publish(topics::alerts(&self.vin), b, Priority::Alert, false));
        if let Err(e) = sent {
            tracing::error!(code = e.code(), error = %e, kind, "alert not queued");
        }
    }

    /// Carries out one effect and feeds its result back to the machine.
    async fn carry(&self, effect: Effect, m: &mut Renewal) -> Result<Vec<Effect>, DaemonError> {
        let dir = |g: u64| self.store.generation_dir(g);
        Ok(match effect {
            Effect::GenerateKey { generation } => {
                let d = self.store.fresh_generation(generation)?;
                self.keys.generate(&d)?;
                tracing::info!(generation, "certificate renewal: new key generated");
                hit(Crash::RenewAfterKeyGenerated);
                m.key_generated(wall_ms())
            }
            Effect::PublishCsr { generation } => {
                let csr = self.keys.csr(&dir(generation), &self.vin)?;
                self.publish(
                    topics::identity_csr(&self.vin),
                    csr.into_bytes(),
                    Priority::Result,
                    true,
                )?;
                tracing::info!(generation, "certificate renewal: CSR published");
                hit(Crash::RenewAfterCsrPublished);
                Vec::new()
            }
            Effect::Check { generation, pem } => {
                let spki = self.keys.public_key(&dir(generation))?;
                let ca = self.store.files(0, self.keys.as_ref()).ca;
                let expected = Expected {
                    ca: &ca,
                    spki: &spki,
                    vin: &self.vin,
                };
                let verdict = check(&pem, expected, wall_ms() / 1000);
                m.checked(pem, verdict, wall_ms())
            }
            Effect::StoreCert { generation, pem } => {
                self.store.store_cert(generation, &pem)?;
                tracing::info!(
                    generation,
                    "certificate renewal: certificate checked and stored"
                );
                hit(Crash::RenewAfterCertStored);
                Vec::new()
            }
            Effect::Probe { generation } => {
                let files = self.store.files(generation, self.keys.as_ref());
                let key = self.keys.candidate_key(&dir(generation))?;
                let ok = match telematics_link::probe(
                    &self.link_config,
                    &files,
                    key.as_ref(),
                    PROBE_TIMEOUT,
                )
                .await
                {
                    Ok(()) => {
                        tracing::info!(
                            generation,
                            "certificate renewal: the broker accepts the new identity"
                        );
                        hit(Crash::RenewAfterProbe);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(code = e.code(), error = %e, generation, "certificate renewal: probe failed");
                        false
                    }
                };
                m.probed(ok)
            }
            Effect::Commit { generation } => {
                self.store.commit(generation)?;
                // After the commit record: a crash before this is finished at the next start.
                self.keys.promote(&dir(generation))?;
                m.committed_now()
            }
            Effect::Outcome {
                generation,
                refused,
                serial,
            } => {
                match refused {
                    Some(r) => {
                        tracing::warn!(code = r.code(), generation, serial = ?serial, "renewed certificate refused")
                    }
                    None => tracing::info!(generation, serial = ?serial, "certificate renewed"),
                }
                let outcome = RenewalOutcome {
                    vin: self.vin.clone(),
                    at: wall_ms(),
                    generation,
                    refused: refused.map(|r| r.code().to_string()),
                    serial,
                };
                let bytes = outcome
                    .encode()
                    .map_err(|e| DaemonError::Identity(e.to_string()))?;
                self.publish(
                    topics::identity_outcome(&self.vin),
                    bytes,
                    Priority::Result,
                    false,
                )?;
                Vec::new()
            }
            Effect::Renewed { generation, serial } => {
                let files = self.store.files(generation, self.keys.as_ref());
                let switched = self
                    .keys
                    .current_key(Some(&dir(generation)))
                    .and_then(|key| {
                        self.link
                            .switch_identity(files, key)
                            .map_err(|e| DaemonError::Link(e.to_string()))
                    });
                if let Err(e) = switched {
                    // Committed and proven: the next start uses it in any case.
                    tracing::error!(code = e.code(), error = %e, "switch to the renewed identity failed");
                }
                // The CSR is answered: clear the retained one.
                self.publish(
                    topics::identity_csr(&self.vin),
                    Vec::new(),
                    Priority::Result,
                    true,
                )?;
                self.alert(
                    ALERT_CERT_RENEWED,
                    SignalValue::Text(serial.unwrap_or_default()),
                    wall_ms(),
                );
                self.check_expiry(generation, wall_ms());
                Vec::new()
            }
        })
    }
}
