//! The back end's side of the in-band certificate renewal (docs/topics.md, `identity/*`):
//! `telematicsctl ca sign-csr` signs a vehicle's PEM CSR with a CA key, `telematicsctl ca
//! respond` answers every CSR a vehicle publishes on `vehicles/{vin}/identity/csr` with a
//! certificate on `vehicles/{vin}/identity/certificate` (tests, the demo, a small back end).
//!
//! The signer decides the certificate's content: only the CSR's public key (its signature
//! checked, proof of possession) and subject are taken; the CSR's CN must be the VIN; the
//! certificate is a client certificate (`digitalSignature`, `clientAuth`, not a CA) with a
//! random serial, valid from 5 minutes ago for `--days`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use rcgen::{
    CertificateSigningRequestParams, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::rand::SecureRandom;
use rumqttc::{Event, Packet, QoS};
use telematics_link::topics;

use crate::cli::MqttArgs;
use crate::mqtt::{check_connack, check_suback, connect, disconnect, sanitize};
use crate::{CtlError, MqttConn};

/// `telematicsctl ca ...`.
#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Sign a vehicle's CSR (PEM) with the CA key; writes the certificate (PEM).
    SignCsr {
        /// The signing CA's certificate (PEM).
        #[arg(long)]
        ca_cert: PathBuf,
        /// The signing CA's private key (PEM PKCS#8).
        #[arg(long)]
        ca_key: PathBuf,
        /// The CSR (PEM), e.g. saved from `vehicles/{vin}/identity/csr`.
        #[arg(long)]
        csr: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Refuse unless the CSR's CN is this VIN.
        #[arg(long)]
        vin: Option<String>,
        /// Write the certificate here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Answer a vehicle's renewal CSRs with signed certificates (runs until `--count`
    /// answers or Ctrl-C).
    Respond(RespondArgs),
}

/// Options of `ca respond`.
#[derive(Args, Debug)]
pub struct RespondArgs {
    /// VIN whose CSRs to answer.
    #[arg(long)]
    pub vin: String,
    /// The signing CA's certificate (PEM).
    #[arg(long)]
    pub ca_cert: PathBuf,
    /// The signing CA's private key (PEM PKCS#8).
    #[arg(long)]
    pub ca_key: PathBuf,
    /// Validity in days of the certificates issued.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Exit after this many certificates.
    #[arg(long)]
    pub count: Option<u64>,
    /// Broker connection (the back end's identity).
    #[command(flatten)]
    pub mqtt: MqttArgs,
}

fn ca_err(what: &str, e: impl std::fmt::Display) -> CtlError {
    CtlError::Ca(format!("{what}: {e}"))
}

fn read_text(what: &'static str, p: &Path) -> Result<String, CtlError> {
    std::fs::read_to_string(p).map_err(|e| CtlError::io(what, p, e))
}

/// A loaded signing CA.
pub struct SigningCa {
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for SigningCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCa").finish_non_exhaustive()
    }
}

impl SigningCa {
    /// Loads the CA certificate and its key (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, CtlError> {
        let key = KeyPair::from_pem(&read_text("reading CA key", key)?)
            .map_err(|e| ca_err("CA key", e))?;
        let issuer = Issuer::from_ca_cert_pem(&read_text("reading CA certificate", cert)?, key)
            .map_err(|e| ca_err("CA certificate", e))?;
        Ok(SigningCa { issuer })
    }

    /// Signs `csr_pem` for `days` days; the CSR's CN must equal `vin` when given. Returns the
    /// certificate (PEM) and the CN it names.
    pub fn sign(
        &self,
        csr_pem: &str,
        days: u32,
        vin: Option<&str>,
    ) -> Result<(String, String), CtlError> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| ca_err("CSR", e))?;
        let cn = csr
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .and_then(cn_text)
            .ok_or_else(|| CtlError::Ca("CSR: no subject CN".into()))?;
        if let Some(v) = vin
            && v != cn
        {
            return Err(CtlError::Ca(format!(
                "CSR: subject CN {:?} is not the VIN {v}",
                sanitize(&cn)
            )));
        }
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = csr.params.distinguished_name.clone();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(i64::from(days));
        let mut serial = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut serial)
            .map_err(|_| CtlError::Ca("no randomness for the serial".into()))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| ca_err("signing", e))?;
        Ok((signed.pem(), cn))
    }
}

fn cn_text(v: &DnValue) -> Option<String> {
    match v {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Runs `telematicsctl ca ...`.
pub async fn run(cmd: CaCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        CaCmd::SignCsr {
            ca_cert,
            ca_key,
            csr,
            days,
            vin,
            out,
        } => {
            let ca = SigningCa::load(&ca_cert, &ca_key)?;
            let pem = sign_csr_file(&ca, &csr, days, vin.as_deref())?;
            match out {
                Some(p) => {
                    std::fs::write(&p, &pem)
                        .map_err(|e| CtlError::io("writing certificate", &p, e))?;
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "certificate_file": p.display().to_string() })
                        );
                    } else {
                        println!("certificate written to {}", p.display());
                    }
                }
                None => print!("{pem}"),
            }
        }
        CaCmd::Respond(a) => {
            let conn = a.mqtt.conn()?;
            let ca = SigningCa::load(&a.ca_cert, &a.ca_key)?;
            respond(&conn, &ca, &a.vin, a.days, a.count, |line| {
                if json {
                    println!("{}", serde_json::json!({ "event": line }));
                } else {
                    println!("{line}");
                }
            })
            .await?;
        }
    }
    Ok(())
}

/// `ca sign-csr`: signs the CSR file; returns the certificate PEM.
pub fn sign_csr_file(
    ca: &SigningCa,
    csr: &Path,
    days: u32,
    vin: Option<&str>,
) -> Result<String, CtlError> {
    Ok(ca.sign(&read_text("reading CSR", csr)?, days, vin)?.0)
}

/// `ca respond`: answers CSRs on `vehicles/{vin}/identity/csr` until `count` certificates were
/// sent. `on_line` gets one line per CSR (answered or refused).
pub async fn respond(
    conn: &MqttConn,
    ca: &SigningCa,
    vin: &str,
    days: u32,
    count: Option<u64>,
    mut on_line: impl FnMut(String),
) -> Result<(), CtlError> {
    let (client, mut ev) = connect(conn)?;
    let csr_topic = topics::identity_csr(vin);
    let mut answered = 0u64;
    loop {
        if count.is_some_and(|c| answered >= c) {
            disconnect(&client, &mut ev).await;
            return Ok(());
        }
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                check_connack(ack.code)?;
                client
                    .subscribe(csr_topic.clone(), QoS::AtLeastOnce)
                    .await
                    .map_err(|e| CtlError::Mqtt(e.to_string()))?;
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => check_suback(&ack, &csr_topic)?,
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == csr_topic => {
                if p.payload.is_empty() {
                    continue; // the vehicle cleared its answered CSR
                }
                let csr = String::from_utf8_lossy(&p.payload);
                match ca.sign(&csr, days, Some(vin)) {
                    Ok((pem, _)) => {
                        client
                            .publish(
                                topics::identity_certificate(vin),
                                QoS::AtLeastOnce,
                                false,
                                pem,
                            )
                            .await
                            .map_err(|e| CtlError::Mqtt(e.to_string()))?;
                        answered += 1;
                        on_line(format!("{vin}: certificate sent ({days} days)"));
                    }
                    Err(e) => on_line(format!("{vin}: CSR refused ({}): {e}", e.code())),
                }
            }
            Ok(_) => {}
            Err(e) => {
                on_line(format!("connection error: {e}; reconnecting"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signs_a_csr_for_its_vin_only() {
        let pki = telematics_testkit::TestPki::generate().unwrap();
        let ca = SigningCa::load(pki.ca_cert(), pki.ca_key()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "VIN1");
        let csr = p.serialize_request(&key).unwrap().pem().unwrap();
        let (pem, cn) = ca.sign(&csr, 30, Some("VIN1")).unwrap();
        assert_eq!(cn, "VIN1");
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let facts = telematics_link::certificate_facts(der.as_ref()).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(facts.spki, key.subject_public_key_info());
        let days = (facts.validity.not_after - facts.validity.not_before) / 86_400;
        assert_eq!(days, 30);
        let chain = telematics_link::verify_client_chain(
            pki.ca_cert(),
            pem.as_bytes(),
            facts.validity.not_before + 3600,
        )
        .unwrap();
        assert!(chain.is_ok(), "{chain:?}");
        assert_eq!(
            ca.sign(&csr, 30, Some("VIN2")).unwrap_err().code(),
            "ctl.ca"
        );
        assert_eq!(ca.sign("junk", 30, None).unwrap_err().code(), "ctl.ca");
    }
}
