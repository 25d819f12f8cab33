//! A valid command behind a flood (issue: "a flood of garbage breaks the command path"): the
//! round trip of a lock/unlock published right after N garbage messages, or N envelopes that
//! fail the AEAD (right key id and VIN, wrong key), against the same command unloaded, in one
//! run with one daemon at the production PBKDF2 cost.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, ensure};
use ring::rand::{SecureRandom, SystemRandom};
use telematics_it::{CODE, Device};
use telematics_security::Action;
use telematics_security::client::{CommandRequest, build_command};
use telematics_telemetry::ResultState;

use crate::single::{build, round_trip, spawn_ready, world};
use crate::stats::{self, Summary};

/// What precedes the measured command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Nothing: the reference.
    None,
    /// Random bytes, 64..512 long (refused `decode`).
    Garbage,
    /// Well-formed envelopes for a paired key id, sealed with another secret (`aead`).
    ForgedAead,
}

/// Round trips per load.
pub struct FloodReport {
    /// Messages in front of each measured command.
    pub flood: usize,
    /// PBKDF2 iterations of the daemon.
    pub iterations: u32,
    /// (load, publish -> `executed` of the command behind it).
    pub rows: Vec<(Load, Summary)>,
}

fn garbage(rng: &SystemRandom) -> Result<Vec<u8>> {
    let mut len = [0u8; 2];
    rng.fill(&mut len).map_err(|_| anyhow::anyhow!("random"))?;
    let mut b = vec![0u8; 64 + usize::from(u16::from_le_bytes(len)) % 448];
    rng.fill(&mut b).map_err(|_| anyhow::anyhow!("random"))?;
    Ok(b)
}

fn forged(dev: &Device, rng: &SystemRandom, i: u64) -> Result<Vec<u8>> {
    let mut cred = dev.cred.clone();
    rng.fill(&mut cred.secret)
        .map_err(|_| anyhow::anyhow!("random"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let req = CommandRequest {
        command_id: telematics_security::CommandId([(i % 251) as u8; 16]),
        action: Action::Unlock,
        counter: dev.counter + 1_000 + i,
        issued_at: now,
        expires_at: now + 60,
        code: CODE.into(),
    };
    build_command(&cred, &req, rng).map_err(|e| anyhow::anyhow!("forge: {e}"))
}

/// `rounds` measured commands per load, each behind `flood` messages (none for the reference);
/// loads interleaved so that all see the same machine.
pub async fn run(bin: &Path, iterations: u32, flood: usize, rounds: usize) -> Result<FloodReport> {
    let w = world(bin, iterations, 60).await?;
    let (mut d, _) = spawn_ready(&w, bin).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut dev = w.pair("bench", CODE).await;
    let rng = SystemRandom::new();
    let loads = [Load::None, Load::Garbage, Load::ForgedAead];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); loads.len()];
    // One warm-up command.
    let (id, bytes) = build(&mut dev, w.next_lock_action().await)?;
    round_trip(&w, id, bytes).await?;
    for round in 0..rounds {
        for (k, load) in loads.iter().enumerate() {
            let noise: Vec<Vec<u8>> = match load {
                Load::None => Vec::new(),
                Load::Garbage => (0..flood).map(|_| garbage(&rng)).collect::<Result<_>>()?,
                Load::ForgedAead => (0..flood)
                    .map(|i| forged(&dev, &rng, i as u64))
                    .collect::<Result<_>>()?,
            };
            for n in noise {
                w.publish_raw(n).await;
            }
            let (id, bytes) = build(&mut dev, w.next_lock_action().await)?;
            let (_, t, state, reason) = round_trip(&w, id, bytes).await?;
            ensure!(
                state == ResultState::Executed,
                "round {round} {load:?}: {state:?} {reason:?}; log:\n{}",
                w.log()
            );
            samples[k].push(t);
            // Let the confirmation frames settle before the next round.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    d.stop(Duration::from_secs(15)).await?;
    let rows = loads
        .iter()
        .zip(&samples)
        .map(|(l, s)| {
            Ok((
                *l,
                stats::summarize(s).ok_or_else(|| anyhow::anyhow!("no samples"))?,
            ))
        })
        .collect::<Result<_>>()?;
    Ok(FloodReport {
        flood,
        iterations,
        rows,
    })
}
