//! Decode throughput of `Dbc::decode_frame` over candump logs, in a form that
//! `scripts/bench-cantools.sh` compares with cantools (Python) in the same run.
//!
//! ```text
//! cargo bench -p telematics-can --bench cantools_compare -- \
//!     [--reps N] [--min-time SECS] [--dump-dir DIR --dump-frames N] \
//!     --input NAME DBC LOG [--input NAME DBC LOG ...]
//! ```
//!
//! For every input it parses the DBC and the log (timed separately), then times decoding every
//! frame of the log (every signal of the message, scaling and value-table labels, unknown ids
//! skipped) `--reps` times and prints one `RESULT {json}` line with the median frames/s.
//! With `--dump-dir`, the decoded values of the first `--dump-frames` frames are written to
//! `DIR/NAME.jsonl` for the cross-check against cantools.
//!
//! Without `--input` (e.g. `cargo bench -p telematics-can`, or `cargo test --benches`, where it
//! runs once as a smoke test) it uses the demo DBC with the demo drive and park logs.

#![allow(missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use telematics_can::{CanFrame, CandumpReader, Dbc, DecodeOutcome};

struct Input {
    name: String,
    dbc: PathBuf,
    log: PathBuf,
}

struct Options {
    reps: usize,
    min_time: Duration,
    dump_dir: Option<PathBuf>,
    dump_frames: usize,
    inputs: Vec<Input>,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "cantools_compare: {msg}\nusage: cantools_compare [--reps N] [--min-time SECS] \
         [--dump-dir DIR --dump-frames N] --input NAME DBC LOG [--input ...]"
    );
    std::process::exit(2)
}

fn parse_args() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then run once, quickly.
    let bench_mode = args.iter().any(|a| a == "--bench");
    let mut o = Options {
        reps: if bench_mode { 5 } else { 1 },
        min_time: Duration::from_millis(if bench_mode { 500 } else { 1 }),
        dump_dir: None,
        dump_frames: 2000,
        inputs: Vec::new(),
    };
    let mut it = args.into_iter();
    let next = |it: &mut std::vec::IntoIter<String>, flag: &str| {
        it.next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {}
            "--reps" => {
                o.reps = next(&mut it, "--reps")
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| usage("--reps wants a positive integer"))
            }
            "--min-time" => {
                let s: f64 = next(&mut it, "--min-time")
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .unwrap_or_else(|| usage("--min-time wants seconds"));
                o.min_time = Duration::from_secs_f64(s);
            }
            "--dump-dir" => o.dump_dir = Some(next(&mut it, "--dump-dir").into()),
            "--dump-frames" => {
                o.dump_frames = next(&mut it, "--dump-frames")
                    .parse()
                    .unwrap_or_else(|_| usage("--dump-frames wants an integer"))
            }
            "--input" => {
                let name = next(&mut it, "--input");
                let dbc = next(&mut it, "--input").into();
                let log = next(&mut it, "--input").into();
                o.inputs.push(Input { name, dbc, log });
            }
            // Arguments meant for criterion when `cargo bench -p telematics-can -- ...` runs
            // every bench of the crate: not ours, say so and go on with the defaults.
            other => eprintln!("cantools_compare: ignoring argument {other:?}"),
        }
    }
    if o.inputs.is_empty() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        for log in ["demo_drive", "demo_park"] {
            o.inputs.push(Input {
                name: log.to_string(),
                dbc: data.join("demo_car.dbc"),
                log: data.join(format!("{log}.log")),
            });
        }
    }
    o
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// On-CPU time of this thread in ns (Linux `/proc/thread-self/schedstat`, the clock behind
/// `CLOCK_THREAD_CPUTIME_ID`, which the cantools side reads with `time.thread_time()`). On a
/// shared machine it leaves out the time the thread waited for a core; `None` elsewhere.
/// The kernel updates it at scheduler ticks (a few ms), so it is only meaningful over windows
/// of hundreds of ms (the default `--min-time` 0.5 s: error about 1%).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_ascii_whitespace().next()?.parse().ok()
}

/// One timed pass over all frames; returns the number of decoded signals (kept alive).
fn decode_all(dbc: &Dbc, frames: &[CanFrame]) -> usize {
    let mut n = 0usize;
    for f in frames {
        if let Ok(DecodeOutcome::Decoded(d)) = dbc.decode_frame(black_box(f)) {
            n += d.signals.len();
            black_box(&d);
        }
    }
    n
}

/// Decoded values of the first `limit` frames, one JSON object per line.
fn dump(dbc: &Dbc, frames: &[CanFrame], limit: usize) -> String {
    let mut out = String::new();
    for (i, f) in frames.iter().take(limit).enumerate() {
        let (outcome, signals) = match dbc.decode_frame(f) {
            Ok(DecodeOutcome::Decoded(d)) => (
                "decoded",
                d.signals
                    .iter()
                    .map(|s| {
                        // Debug formatting keeps NaN/inf and round-trips every f64.
                        serde_json::json!([s.def.name, format!("{:?}", s.physical), s.label])
                    })
                    .collect(),
            ),
            Ok(DecodeOutcome::UnknownId) => ("unknown", Vec::new()),
            Ok(DecodeOutcome::Remote) => ("remote", Vec::new()),
            Err(_) => ("error", Vec::new()),
        };
        let line = serde_json::json!({
            "i": i, "id": f.id, "ext": f.extended, "outcome": outcome, "signals": signals,
        });
        let _ = writeln!(out, "{line}");
    }
    out
}

fn run(o: &Options, input: &Input) -> Result<serde_json::Value, String> {
    let dbc_text =
        std::fs::read_to_string(&input.dbc).map_err(|e| format!("{}: {e}", input.dbc.display()))?;
    let log_text =
        std::fs::read_to_string(&input.log).map_err(|e| format!("{}: {e}", input.log.display()))?;

    let mut parse_dbc_ms = Vec::new();
    let mut parse_log_ms = Vec::new();
    let mut dbc = None;
    let mut frames = Vec::new();
    for _ in 0..o.reps {
        let t = Instant::now();
        let d = Dbc::parse(black_box(&dbc_text)).map_err(|e| format!("{}: {e}", input.name))?;
        parse_dbc_ms.push(t.elapsed().as_secs_f64() * 1e3);
        dbc = Some(d);
        let t = Instant::now();
        let mut reader = CandumpReader::from_text(black_box(&log_text));
        frames = reader.by_ref().map(|f| f.frame).collect::<Vec<_>>();
        parse_log_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if reader.garbage_count() > 0 {
            return Err(format!(
                "{}: {} garbage lines in {}",
                input.name,
                reader.garbage_count(),
                input.log.display()
            ));
        }
    }
    let dbc = dbc.ok_or("no repetition ran")?;
    if frames.is_empty() {
        return Err(format!(
            "{}: no frames in {}",
            input.name,
            input.log.display()
        ));
    }

    let (mut decoded, mut unknown, mut errors, mut remote) = (0u64, 0u64, 0u64, 0u64);
    for f in &frames {
        match dbc.decode_frame(f) {
            Ok(DecodeOutcome::Decoded(_)) => decoded += 1,
            Ok(DecodeOutcome::UnknownId) => unknown += 1,
            Ok(DecodeOutcome::Remote) => remote += 1,
            Err(_) => errors += 1,
        }
    }
    let signals_per_pass = decode_all(&dbc, &frames);

    if let Some(dir) = &o.dump_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{}.jsonl", input.name));
        std::fs::write(&path, dump(&dbc, &frames, o.dump_frames))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }

    // Warm-up, then `reps` measurements of at least `min_time` each.
    black_box(decode_all(&dbc, &frames));
    let mut fps = Vec::with_capacity(o.reps);
    let mut fps_cpu = Vec::with_capacity(o.reps);
    for _ in 0..o.reps {
        let cpu0 = thread_cpu_ns();
        let t = Instant::now();
        let mut passes = 0u64;
        let mut sink = 0usize;
        loop {
            sink += decode_all(&dbc, &frames);
            passes += 1;
            if t.elapsed() >= o.min_time {
                break;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu0.zip(thread_cpu_ns()).map(|(a, b)| b.saturating_sub(a));
        black_box(sink);
        let n = (passes * frames.len() as u64) as f64;
        fps.push(n / secs);
        if let Some(ns) = cpu.filter(|ns| *ns > 0) {
            fps_cpu.push(n / (ns as f64 * 1e-9));
        }
    }
    let runs = fps.clone();
    let fps_cpu_median = (fps_cpu.len() == o.reps).then(|| median(&mut fps_cpu));
    Ok(serde_json::json!({
        "input": input.name,
        "frames": frames.len(),
        "decoded": decoded,
        "unknown": unknown,
        "errors": errors,
        "remote": remote,
        "signals_per_pass": signals_per_pass,
        "messages": dbc.messages().len(),
        "fps_median": median(&mut fps),
        "fps_runs": runs,
        "fps_cpu_median": fps_cpu_median,
        "parse_dbc_ms": median(&mut parse_dbc_ms),
        "parse_log_ms": median(&mut parse_log_ms),
    }))
}

fn main() {
    let o = parse_args();
    let mut failed = false;
    for input in &o.inputs {
        match run(&o, input) {
            Ok(v) => {
                println!(
                    "{:<12} {:>8} frames  {:>12.0} frames/s wall, {:>12.0} frames/s on-CPU \
                     (median of {})",
                    input.name,
                    v["frames"],
                    v["fps_median"].as_f64().unwrap_or(0.0),
                    v["fps_cpu_median"].as_f64().unwrap_or(f64::NAN),
                    o.reps
                );
                println!("RESULT {v}");
            }
            Err(e) => {
                eprintln!("cantools_compare: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
