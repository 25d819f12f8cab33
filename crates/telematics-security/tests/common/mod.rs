#![allow(dead_code, clippy::unwrap_used)]

use ring::rand::SystemRandom;
use telematics_security::client::{CommandRequest, build_command};
use telematics_security::{Action, CommandId, Config, ExportedCredential, SecurityState, Verifier};

pub const VIN: &str = "WBA3A5C51CF256985";
pub const CODE: &str = "2580";
pub const NOW: u64 = 1_800_000_000;

pub fn cfg() -> Config {
    Config {
        pbkdf2_iterations: 1000,
        min_pbkdf2_iterations: 1000,
        ..Config::default()
    }
}

pub struct Setup {
    pub state: SecurityState,
    pub verifier: Verifier,
    pub cred: ExportedCredential,
    pub rng: SystemRandom,
}

pub fn setup() -> Setup {
    let rng = SystemRandom::new();
    let mut state = SecurityState::default();
    let proof = state
        .set_initial_code(&cfg(), CODE, &rng, NOW - 1000)
        .unwrap();
    let cred = state
        .add_device(proof, VIN, "phone", &rng, NOW - 900)
        .unwrap();
    Setup {
        state,
        verifier: Verifier::new(cfg(), VIN).unwrap(),
        cred,
        rng,
    }
}

pub fn req(counter: u64, code: &str) -> CommandRequest {
    CommandRequest {
        command_id: CommandId([counter as u8; 16]),
        action: Action::Unlock,
        counter,
        issued_at: NOW,
        expires_at: NOW + 60,
        code: code.to_owned(),
    }
}

impl Setup {
    pub fn cmd(&self, counter: u64, code: &str) -> Vec<u8> {
        build_command(&self.cred, &req(counter, code), &self.rng).unwrap()
    }

    /// Full two-phase verification; returns the fault code or "ok".
    pub fn run(&mut self, bytes: &[u8], now: u64) -> &'static str {
        match self.verifier.begin(&mut self.state, bytes, now) {
            Err(r) => {
                assert_eq!(r.audit.fault_code, Some(r.fault.code()));
                r.fault.code()
            }
            Ok(p) => {
                let f = p.finish(&mut self.state, now);
                match f.result {
                    Ok(_) => {
                        assert_eq!(f.audit.fault_code, None);
                        "ok"
                    }
                    Err(e) => {
                        assert_eq!(f.audit.fault_code, Some(e.code()));
                        e.code()
                    }
                }
            }
        }
    }
}
