//! CPU time by program, for the benchmarks' figures (Linux `/proc`).

/// CPU seconds used so far by every running process of this machine: pid → (program, seconds) (Linux `/proc`).
pub fn by_process() -> std::collections::HashMap<u32, (String, f64)> {
    // Clock ticks per second: 100 on every Linux this runs on (`getconf CLK_TCK`).
    const TICKS: f64 = 100.0;
    let mut used = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
            .sum();
        used.insert(pid, (stat[open + 1..close].to_owned(), ticks / TICKS));
    }
    used
}

/// What each program used since `before`, the busiest first: "postgres 12.1 s, switchyard 8.0 s, ...". Processes
/// that ended in between are not counted.
pub fn since(before: &std::collections::HashMap<u32, (String, f64)>) -> String {
    let used = by_program(before);
    used.iter()
        .take(5)
        .map(|(name, s)| format!("{name} {s:.1} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What each program used since `before`, in seconds, the busiest first (at least 0.05 s each).
pub fn by_program(before: &std::collections::HashMap<u32, (String, f64)>) -> Vec<(String, f64)> {
    let mut by_program: std::collections::HashMap<String, f64> = Default::default();
    for (pid, (name, now)) in by_process() {
        let was = before
            .get(&pid)
            .filter(|(n, _)| *n == name)
            .map_or(0.0, |(_, s)| *s);
        *by_program.entry(name).or_default() += now - was;
    }
    let mut used: Vec<(String, f64)> = by_program.into_iter().filter(|(_, s)| *s >= 0.05).collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    used
}
