//! CPU time and memory of another process, read from Linux `/proc`.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcessSample {
    /// User CPU time of all threads, seconds.
    pub user_s: f64,
    /// System CPU time of all threads, seconds.
    pub sys_s: f64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// Current resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    pub threads: u64,
}

impl ProcessSample {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`. `ticks_per_second`
/// is the kernel's `CLK_TCK` (`getconf CLK_TCK`), the unit of the CPU
/// times in `stat`.
pub fn sample(pid: u32, ticks_per_second: u64) -> anyhow::Result<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("failed to read /proc/{pid}/stat; has process {pid} exited?"))?;
    // The command name is in parentheses and may contain spaces, so fields
    // are counted from the last closing parenthesis: field 3 (`state`) is
    // the first after it, so `utime` (14) and `stime` (15) are the 12th
    // and 13th.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/<pid>/stat layout")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    if fields.len() < 13 {
        bail!("unexpected /proc/{pid}/stat layout: {stat}");
    }
    let ticks = |index: usize| -> anyhow::Result<f64> {
        let value: u64 = fields[index]
            .parse()
            .with_context(|| format!("invalid CPU time in /proc/{pid}/stat: {stat}"))?;
        Ok(value as f64 / ticks_per_second as f64)
    };
    let user_s = ticks(11)?;
    let sys_s = ticks(12)?;

    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("failed to read /proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcessSample {
        user_s,
        sys_s,
        peak_rss_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
    })
}

/// Named processes whose CPU use a run reports.
#[derive(Debug, Clone)]
pub struct Watched {
    pub processes: Vec<(String, u32)>,
    pub ticks_per_second: u64,
}

/// CPU time of each watched process, and of the whole machine, at one
/// instant.
pub struct CpuSnapshot {
    taken: Instant,
    cpu_s: Vec<Option<f64>>,
    machine_busy_s: Option<f64>,
}

/// CPU use of one process between two snapshots.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    pub cpu_s: f64,
    /// CPU seconds per second of wall-clock time: 1.0 is one core busy.
    pub cores: f64,
}

impl Watched {
    /// Takes a snapshot. A process that cannot be read counts as missing.
    pub fn snapshot(&self) -> CpuSnapshot {
        CpuSnapshot {
            taken: Instant::now(),
            cpu_s: self
                .processes
                .iter()
                .map(|(_, pid)| sample(*pid, self.ticks_per_second).ok().map(|s| s.cpu_s()))
                .collect(),
            machine_busy_s: machine_busy_ticks()
                .map(|ticks| ticks as f64 / self.ticks_per_second as f64),
        }
    }

    /// CPU use of each process between `before` and `after`, by name, and
    /// of every process on the machine together as `machine`.
    pub fn usage(&self, before: &CpuSnapshot, after: &CpuSnapshot) -> BTreeMap<String, CpuUse> {
        let wall_s = (after.taken - before.taken).as_secs_f64().max(1e-9);
        let mut usage = BTreeMap::new();
        if let (Some(start), Some(end)) = (before.machine_busy_s, after.machine_busy_s) {
            usage.insert(
                "machine".to_owned(),
                CpuUse {
                    cpu_s: end - start,
                    cores: (end - start) / wall_s,
                },
            );
        }
        for (index, (name, _)) in self.processes.iter().enumerate() {
            if let (Some(start), Some(end)) = (before.cpu_s[index], after.cpu_s[index]) {
                let cpu_s = end - start;
                usage.insert(
                    name.clone(),
                    CpuUse {
                        cpu_s,
                        cores: cpu_s / wall_s,
                    },
                );
            }
        }
        usage
    }
}

/// Busy CPU time of all cores since boot, in clock ticks: the first line
/// of `/proc/stat` less its idle and iowait columns. Time that the
/// hypervisor stole counts as busy, because no process here could use it.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let columns: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|column| column.parse().ok())
        .collect::<Option<_>>()?;
    // The columns are user, nice, system, idle, iowait, irq, softirq, steal,
    // guest and guest_nice. Guest time is already counted in user and nice.
    let busy: u64 = columns.iter().take(8).sum::<u64>() - columns.get(3)? - columns.get(4)?;
    Some(busy)
}
