//! Per-process CPU time and memory from `/proc` (Linux only).

use std::path::Path;

use anyhow::{Context, Result, bail};

/// CPU time and identity of a process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// `comm` (executable name, at most 15 bytes).
    pub comm: String,
    /// Parent pid.
    pub ppid: u32,
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name may contain spaces and parentheses,
/// so the fields are taken after the *last* `)`.
pub fn parse_stat(text: &str) -> Result<Stat> {
    let open = text.find('(').context("stat: no '('")?;
    let close = text.rfind(')').context("stat: no ')'")?;
    if close < open {
        bail!("stat: ')' before '('");
    }
    let comm = text[open + 1..close].to_string();
    // Fields after ")": 3 state, 4 ppid, ..., 14 utime, 15 stime (1-based, proc(5)).
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        rest.get(n - 3)
            .with_context(|| format!("stat: field {n} missing"))?
            .parse::<u64>()
            .with_context(|| format!("stat: field {n} not a number"))
    };
    let ppid = u32::try_from(field(4)?).context("stat: ppid out of range")?;
    Ok(Stat {
        comm,
        ppid,
        cpu_ticks: field(14)? + field(15)?,
    })
}

/// Reads `/proc/<pid>/stat`.
pub fn stat(pid: u32) -> Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    parse_stat(&text)
}

/// Memory figures in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    /// Resident set size now.
    pub rss_kib: u64,
    /// Peak resident set size.
    pub hwm_kib: u64,
    /// Proportional set size (shared pages divided among the sharers), 0 if unavailable.
    pub pss_kib: u64,
}

/// Value in KiB of the line `key:   123 kB` in a `/proc` status-like text.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Reads VmRSS / VmHWM (`/proc/<pid>/status`) and Pss (`/proc/<pid>/smaps_rollup`).
pub fn mem(pid: u32) -> Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| kib_field(&t, "Pss"))
        .unwrap_or(0);
    Ok(Mem {
        rss_kib: kib_field(&status, "VmRSS").context("VmRSS missing")?,
        hwm_kib: kib_field(&status, "VmHWM").context("VmHWM missing")?,
        pss_kib: pss,
    })
}

/// Voluntary context switches summed over the threads of `pid` (`voluntary_ctxt_switches` in
/// `/proc/<pid>/task/*/status`): each is a thread going to sleep, i.e. one wakeup later.
/// Threads that exit in between are not counted.
pub fn voluntary_switches(pid: u32) -> Result<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("read /proc/{pid}/task"))?;
    let mut n = 0;
    for task in dir {
        let Ok(text) = std::fs::read_to_string(task?.path().join("status")) else {
            continue; // the thread exited
        };
        n += kib_field(&text, "voluntary_ctxt_switches").unwrap_or(0);
    }
    Ok(n)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clk_tck() -> Result<u64> {
    let v = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .context("sysconf(CLK_TCK)")?
        .context("CLK_TCK undefined")?;
    u64::try_from(v).context("CLK_TCK negative")
}

/// Pids of the direct children of `parent` whose `comm` is `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_ok_and(|s| s.ppid == parent && s.comm == comm))
        .collect()
}

/// The one mosquitto started by this process (the test kit spawns it as a direct child).
pub fn our_mosquitto() -> Result<u32> {
    let me = std::process::id();
    let pids = children_named(me, "mosquitto");
    match pids.as_slice() {
        [pid] => Ok(*pid),
        [] => bail!("no mosquitto child of pid {me}"),
        _ => bail!("several mosquitto children of pid {me}: {pids:?}"),
    }
}

/// CPU usage between two tick samples, in percent of one core.
pub fn cpu_percent(ticks: u64, secs: f64, tck: u64) -> f64 {
    if secs <= 0.0 || tck == 0 {
        return 0.0;
    }
    ticks as f64 / tck as f64 / secs * 100.0
}

/// `true` when `/proc` is mounted (every figure here comes from it).
pub fn available() -> bool {
    Path::new("/proc/self/stat").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let line = "1234 (tokio (rt) x) S 77 1234 1234 0 -1 4194560 500 0 0 0 31 17 0 0 20 0 3 0 100 1000 200 18446744073709551615";
        let s = parse_stat(line).expect("parse");
        assert_eq!(s.comm, "tokio (rt) x");
        assert_eq!(s.ppid, 77);
        assert_eq!(s.cpu_ticks, 48);
    }

    #[test]
    fn stat_garbage_is_an_error() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("1 (x) S").is_err());
        assert!(parse_stat("1 )x( S 1 2 3 4 5 6 7 8 9 10 11 12").is_err());
    }

    #[test]
    fn own_process_is_readable() {
        assert!(available());
        let me = std::process::id();
        let s = stat(me).expect("own stat");
        assert!(!s.comm.is_empty());
        let m = mem(me).expect("own mem");
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib, "{m:?}");
        assert!(clk_tck().expect("tck") > 0);
    }

    #[test]
    fn sleeping_is_a_voluntary_switch() {
        let me = std::process::id();
        let before = voluntary_switches(me).expect("own tasks");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(voluntary_switches(me).expect("own tasks") > before);
    }

    #[test]
    fn kib_fields() {
        let t = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(kib_field(t, "VmRSS"), Some(1024));
        assert_eq!(kib_field(t, "VmHWM"), Some(2048));
        assert_eq!(kib_field(t, "Vm"), None);
        assert_eq!(cpu_percent(150, 3.0, 100), 50.0);
    }
}
