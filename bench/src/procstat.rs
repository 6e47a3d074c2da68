//! What a proxy costs, read from /proc: proportional set size, open descriptors and CPU time,
//! each summed over the process and its descendants, so websockify's one-process-per-session
//! model is charged for every process it forks.

use std::collections::HashMap;
use std::fs;
use std::io;

/// Resource use of a process tree at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Proportional set size: shared pages divided among the processes sharing them.
    pub pss_kib: u64,
    pub fds: u64,
    pub processes: u64,
}

/// The process and every live descendant.
pub fn tree(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = process_stats()
        .filter_map(|(pid, stat)| Some((pid, stat_fields(&stat)?.first()?.parse().ok()?)))
        .collect();
    let mut members = vec![root];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        members.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    members
}

/// Memory, descriptors and process count of the tree under `root`.
///
/// # Errors
/// The root process is gone.
pub fn usage(root: u32) -> io::Result<Usage> {
    let mut total = Usage::default();
    fs::metadata(format!("/proc/{root}"))?;
    for pid in tree(root) {
        let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        total.pss_kib += parse_pss_kib(&rollup).unwrap_or(0);
        total.fds += fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| dir.count() as u64)
            .unwrap_or(0);
        total.processes += 1;
    }
    Ok(total)
}

/// CPU seconds (user + system) the tree has used, including reaped children.
pub fn cpu_seconds(root: u32) -> f64 {
    let ticks: u64 = tree(root)
        .into_iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| parse_cpu_ticks(&stat))
        .sum();
    ticks as f64 / ticks_per_second()
}

/// Clock ticks per second, the unit of /proc's CPU times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Every process's id and `/proc/PID/stat` line at one instant (a process that ends
/// meanwhile is left out).
fn process_stats() -> impl Iterator<Item = (u32, String)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter_map(|pid| Some((pid, fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)))
}

/// CPU seconds the whole machine has spent busy (user, nice, system, irq and softirq of all
/// cores) since boot: what a transfer costs everything on the box, the load generator, the
/// sink and the kernel's softirq work included. Idle, iowait and steal are not work done here.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    Some(parse_machine_busy_ticks(&stat)? as f64 / ticks_per_second())
}

/// user + nice + system + irq + softirq of the `cpu` line of /proc/stat (guest time is
/// already inside user).
fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq ...
    let [user, nice, system, _idle, _iowait, irq, softirq, ..] = fields[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq)
}

/// CPU ticks (user + system, all threads) of every process on the machine at one instant.
pub fn process_ticks() -> HashMap<u32, u64> {
    process_stats()
        .filter_map(|(pid, stat)| Some((pid, parse_own_ticks(&stat)?)))
        .collect()
}

/// The process that used the most CPU between two [`process_ticks`] snapshots `seconds`
/// apart: the cores it kept busy and its id. One session is one task in each program here,
/// and a task runs on one thread at a time (tokio moves it between its threads), so a process
/// near 1.0 during a one-session transfer is the stage that bounds it.
pub fn busiest_process(
    before: &HashMap<u32, u64>,
    after: &HashMap<u32, u64>,
    seconds: f64,
) -> Option<(f64, u32)> {
    after
        .iter()
        .filter_map(|(&pid, &t)| Some((t.checked_sub(*before.get(&pid)?)?, pid)))
        .max_by_key(|&(used, _)| used)
        .filter(|_| seconds > 0.0)
        .map(|(used, pid)| (used as f64 / ticks_per_second() / seconds, pid))
}

/// What a process is, for a report: this benchmark's load generator, its sink, its bare
/// relay, or the program's name.
pub fn role(pid: u32) -> String {
    if pid == std::process::id() {
        return "load generator".into();
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args = cmdline.split(|&b| b == 0).map(String::from_utf8_lossy);
    let program = args.next().unwrap_or_default();
    if program.ends_with("consolegate-bench") {
        match args.next().as_deref() {
            Some("sink") => return "sink".into(),
            Some("relay") => return "bare relay".into(),
            _ => {}
        }
    }
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| comm.trim().to_owned())
        .unwrap_or_else(|_| format!("process {pid}"))
}

/// utime + stime (proc(5) fields 14 and 15) in clock ticks: the process's own time, without
/// its reaped children's.
fn parse_own_ticks(stat: &str) -> Option<u64> {
    sum_fields(stat, 14..=15)
}

/// The fields after `pid (comm)`: field 4 of proc(5) (ppid) is the first. `comm` may hold
/// spaces and parentheses, so the split is at the last `)`.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().skip(1).collect())
}

/// utime + stime + cutime + cstime (proc(5) fields 14 to 17) in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    sum_fields(stat, 14..=17)
}

/// The sum of proc(5) fields `numbers` of a stat line (cutime and cstime are signed).
fn sum_fields(stat: &str, numbers: std::ops::RangeInclusive<usize>) -> Option<u64> {
    let fields = stat_fields(stat)?;
    let mut sum = 0u64;
    for n in numbers {
        // fields[0] is field 4 (ppid), so field N is fields[N - 4].
        sum += fields.get(n - 4)?.parse::<i64>().ok()?.max(0) as u64;
    }
    Some(sum)
}

fn parse_pss_kib(rollup: &str) -> Option<u64> {
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Memory the kernel could still hand out, to stop a test before it pushes the machine into
/// swap or the OOM killer.
pub fn mem_available_kib() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_a_comm_with_spaces_and_parentheses() {
        let stat = "4242 (web (sock) ify) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 7 3 20 0 1 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(250 + 50 + 7 + 3));
        assert_eq!(parse_own_ticks(stat), Some(250 + 50));
        assert_eq!(stat_fields(stat).unwrap()[0], "1");
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_iowait_and_steal() {
        let stat = "cpu  100 2 30 5000 40 0 7 9 0 0\ncpu0 50 1 15 2500 20 0 3 4 0 0\n";
        assert_eq!(parse_machine_busy_ticks(stat), Some(100 + 2 + 30 + 7));
        assert_eq!(parse_machine_busy_ticks("cpu  1 2 3\n"), None);
        assert!(machine_busy_seconds().is_some_and(|s| s > 0.0));
    }

    #[test]
    fn the_busiest_process_is_the_one_that_used_most_cpu() {
        let before = HashMap::from([(1, 100), (2, 50), (7, 10)]);
        let after = HashMap::from([(1, 150), (2, 200), (9, 500)]);
        let (share, pid) = busiest_process(&before, &after, 2.0).unwrap();
        assert_eq!(pid, 2);
        assert!((share - 150.0 / ticks_per_second() / 2.0).abs() < 1e-9);
        assert!(process_ticks().contains_key(&std::process::id()));
        assert_eq!(role(std::process::id()), "load generator");
    }

    #[test]
    fn pss_is_read_from_smaps_rollup() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  9000 kB\nPss:  4321 kB\n";
        assert_eq!(parse_pss_kib(rollup), Some(4321));
        assert_eq!(parse_pss_kib("Rss: 1 kB\n"), None);
    }

    #[test]
    fn this_process_has_memory_descriptors_and_cpu() {
        let me = std::process::id();
        let usage = usage(me).unwrap();
        assert!(usage.pss_kib > 0);
        assert!(usage.fds >= 3);
        assert!(usage.processes >= 1);
        assert!(tree(me).contains(&me));
        assert!(cpu_seconds(me) >= 0.0);
    }
}
