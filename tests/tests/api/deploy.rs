//! The production files are checked against the code they describe: every metric a Grafana panel or a Prometheus
//! rule names is one the services export (or a recording rule's), so a renamed metric cannot leave a dashboard
//! blank or an alert silent. (The test command also runs `promtool test rules`, validates the compose file and
//! the rendered Kubernetes manifests, and checks the dashboards are what `infra/grafana/dashboards.py` writes.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The metric names the services register (`counter!("…"`, `gauge!("…"`, `histogram!("…"`; a histogram's
/// `_bucket`, `_sum` and `_count` series too) and the edge bridge's own `edge_bridge_*` series.
fn exported() -> BTreeSet<String> {
    let mut files = Vec::new();
    for dir in [
        "api/src",
        "core/src",
        "graphql/src",
        "workers/src",
        "edge-bridge/src",
    ] {
        rust_files(&repo().join(dir), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let name = &rest[..rest.find('"').unwrap()];
                names.insert(name.to_owned());
                if macro_name == "histogram!(" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
            }
        }
        if file.ends_with("edge-bridge/src/metrics.rs") {
            for piece in text.split('"').filter(|p| p.starts_with("edge_bridge_")) {
                names.insert(piece.to_owned());
            }
        }
    }
    names
}

/// The metric names a PromQL expression reads: identifiers that are not functions, keywords, label names or
/// values, durations or numbers.
fn promql_metrics(expr: &str) -> Vec<String> {
    // Drop label matchers, ranges and strings.
    let mut plain = String::new();
    let mut depth = 0;
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth > 0 => {}
            _ => plain.push(c),
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&word.as_str())
            {
                // Its label list follows in parentheses.
                skip_group = next == Some(&'(');
            } else if ![
                "and",
                "or",
                "unless",
                "bool",
                "offset", // operators
                "sum",
                "min",
                "max",
                "avg",
                "group",
                "count",
                "stddev",
                "stdvar",
                "topk",
                "bottomk",
                "quantile",
                "count_values", // aggregations (`sum by (x) (…)`)
            ]
            .contains(&word.as_str())
                && next != Some(&'(')
                && (start == 0 || !chars[start - 1].is_ascii_digit())
            {
                found.push(word);
            }
            continue;
        }
        if c == '(' && skip_group {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_group = false;
        }
        i += 1;
    }
    found
}

/// The `expr:` of every rule in a Prometheus rules file (one line, or a `|` block) and the names it records.
fn rules(text: &str) -> (Vec<String>, BTreeSet<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    for (n, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(name) = trimmed.strip_prefix("record:") {
            recorded.insert(name.trim().to_owned());
        }
        let Some(rest) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        if rest.trim() == "|" {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            exprs.push(block.join("\n"));
        } else {
            exprs.push(rest.trim().to_owned());
        }
    }
    (exprs, recorded)
}

#[test]
fn the_promql_reader_finds_metrics_and_only_metrics() {
    assert_eq!(
        promql_metrics(
            r#"histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_seconds_bucket{status=~"5.."}[5m])))"#
        ),
        ["http_request_duration_seconds_bucket"]
    );
    assert_eq!(
        promql_metrics(
            "max(a_total) > 0 and sum without (job) (b:rate5m) or on (instance) c unless 1e3"
        ),
        ["a_total", "b:rate5m", "c"]
    );
}

#[test]
fn dashboards_and_rules_name_only_metrics_the_services_export() {
    let exported = exported();
    // The seed metrics (seeds 000, 003 and 004) are among them.
    for seed in [
        "http_requests_total",
        "http_request_duration_seconds",
        "active_rentals_total",
        "billing_charges_total",
        "debt_collection_success_rate",
        "sessions_created_total",
        "sessions_completed_total",
        "sessions_duration_seconds",
        "sessions_active",
        "payments_intents_total",
        "payments_confirmed_total",
        "payments_failed_total",
        "payments_webhook_received_total",
        "reports_generated_total",
        "reports_delivered_total",
        "reports_failed_total",
    ] {
        assert!(exported.contains(seed), "the services do not export {seed}");
    }

    let (exprs, recorded) =
        rules(&std::fs::read_to_string(repo().join("infra/prometheus/rules.yml")).unwrap());
    assert!(exprs.len() >= 15, "every rule's expression is read");
    let known = |name: &str| name == "up" || exported.contains(name) || recorded.contains(name);
    let mut unknown = BTreeSet::new();
    for expr in &exprs {
        for name in promql_metrics(expr) {
            if !known(&name) {
                unknown.insert(format!("rules.yml: {name}"));
            }
        }
    }

    let mut uids = BTreeSet::new();
    let mut panels = 0;
    for entry in std::fs::read_dir(repo().join("infra/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(
            uids.insert(board["uid"].as_str().unwrap().to_owned()),
            "{path:?}: a uid of its own"
        );
        for panel in board["panels"].as_array().unwrap() {
            panels += 1;
            let targets = panel["targets"].as_array().unwrap();
            assert!(
                !targets.is_empty(),
                "{path:?}: {} has a query",
                panel["title"]
            );
            for target in targets {
                for name in promql_metrics(target["expr"].as_str().unwrap()) {
                    if !known(&name) {
                        unknown.insert(format!("{}: {name}", path.display()));
                    }
                }
            }
        }
    }
    assert_eq!(
        uids.len(),
        6,
        "operations, billing, rentals, charging, edge, http"
    );
    assert!(panels >= 40, "{panels} panels");
    assert!(
        unknown.is_empty(),
        "metrics no service exports: {unknown:#?}"
    );
}

/// The workers end sessions too (expired, bought out) and time them in their own recorder, in the API's buckets:
/// the dashboards' `histogram_quantile` reads `sessions_duration_seconds_bucket` from both.
#[test]
fn the_workers_time_sessions_in_the_api_s_buckets() {
    assert_eq!(
        switchyard_workers::SESSION_BUCKETS,
        switchyard_api::metrics::SESSION_BUCKETS
    );
}

/// The edge bridge's Debian package (infra/edge/build-deb.sh) holds the binary, its systemd unit and a private
/// settings file, and its install script fills the settings given on the install command line, once.
#[tokio::test]
async fn the_edge_bridge_package_installs_its_binary_unit_and_settings() {
    use std::os::unix::fs::PermissionsExt;
    let work = std::env::temp_dir().join(format!("switchyard-deb-{}", uuid::Uuid::new_v4()));
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            // The package's contents are what is checked; a quick compression keeps the test short.
            .env("DEB_COMPRESSION", "gzip")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let binary = crate::binaries::binary("edge-bridge");
    let script = repo().join("infra/edge/build-deb.sh");
    let package = run(
        "bash",
        &[
            script.to_str().unwrap(),
            "--binary",
            binary.to_str().unwrap(),
            "--out",
            work.to_str().unwrap(),
            "--arch",
            "amd64",
        ],
    );
    let package = package.trim();
    assert!(package.ends_with("_amd64.deb"), "{package}");
    let info = run("dpkg-deb", &["--field", package, "Package", "Architecture"]);
    assert_eq!(info, "Package: edge-bridge\nArchitecture: amd64\n");

    let root = work.join("root");
    run("dpkg-deb", &["-x", package, root.to_str().unwrap()]);
    run(
        "dpkg-deb",
        &["-e", package, work.join("DEBIAN").to_str().unwrap()],
    );
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/edge-bridge.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/edge-bridge run"));
    assert!(unit.contains("EnvironmentFile=/etc/switchyard/edge-bridge.env"));
    let version = run(
        root.join("usr/bin/edge-bridge").to_str().unwrap(),
        &["--version"],
    );
    assert!(version.starts_with("edge-bridge "), "{version}");
    let settings = root.join("etc/switchyard/edge-bridge.env");
    assert_eq!(
        std::fs::metadata(&settings).unwrap().permissions().mode() & 0o777,
        0o600,
        "the token is readable by root only"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("DEBIAN/conffiles")).unwrap(),
        "/etc/switchyard/edge-bridge.env\n"
    );

    // `sudo BRIDGE_CLOUD_URL=… BRIDGE_TOKEN=… apt install ./edge-bridge.deb` fills them in; an upgrade with other
    // values keeps what the file says.
    let postinst = work.join("DEBIAN/postinst");
    for token in ["first-token", "second-token"] {
        let out = std::process::Command::new("sh")
            .arg(&postinst)
            .arg("configure")
            .env("DPKG_ROOT", &root)
            .env("BRIDGE_CLOUD_URL", "wss://cloud.example/edge/v1/tunnel")
            .env("BRIDGE_TOKEN", token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let filled = std::fs::read_to_string(&settings).unwrap();
    assert!(
        filled.contains("\nBRIDGE_CLOUD_URL=wss://cloud.example/edge/v1/tunnel\n"),
        "{filled}"
    );
    assert!(filled.contains("\nBRIDGE_TOKEN=first-token\n"), "{filled}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Words in backticks of the shape of a setting (`SOME_NAME`).
fn setting_names(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.len() > 3
                && w.contains('_')
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && w.starts_with(|c: char| c.is_ascii_uppercase())
        })
        .map(str::to_owned)
        .collect()
}

/// The configuration reference and the code agree: every setting a service reads is documented, and every
/// documented one is read (by a service, or by `dev.sh`).
#[test]
fn the_configuration_reference_lists_every_setting_the_code_reads_and_no_other() {
    let reference = std::fs::read_to_string(repo().join("docs/src/configuration.md")).unwrap();
    // The first column of the table's rows.
    let documented: BTreeSet<String> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .flat_map(|row| setting_names(row.split(" | ").next().unwrap_or_default()))
        .collect();
    let mut files = Vec::new();
    for dir in [
        "api/src",
        "core/src",
        "workers/src",
        "edge-bridge/src",
        "graphql/src",
    ] {
        rust_files(&repo().join(dir), &mut files);
    }
    let mut read = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for literal in text.split('"').skip(1).step_by(2) {
            if literal.len() > 3
                && literal.contains('_')
                && literal
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                read.insert(literal.to_owned());
            }
        }
    }
    // Literals of that shape that are not settings: an enum value, cargo's variable, a simulator's flag.
    for not_a_setting in ["BOUGHT_OUT", "CARGO_PKG_VERSION", "AGENT_KEY"] {
        assert!(
            read.remove(not_a_setting),
            "{not_a_setting} is still in the code"
        );
    }
    let missing: Vec<&String> = read.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "settings the code reads but the reference omits: {missing:?}"
    );
    let dev_sh = std::fs::read_to_string(repo().join("infra/dev.sh")).unwrap();
    let stale: Vec<&String> = documented
        .difference(&read)
        .filter(|name| !dev_sh.contains(name.as_str()))
        .collect();
    assert!(
        stale.is_empty(),
        "documented settings nothing reads: {stale:?}"
    );
    assert!(documented.len() > 120, "{} settings", documented.len());
}

/// Each alert has a section saying what to do about it.
#[test]
fn every_alert_has_a_section_in_the_operations_chapter() {
    let rules = std::fs::read_to_string(repo().join("infra/prometheus/rules.yml")).unwrap();
    let operations = std::fs::read_to_string(repo().join("docs/src/operations.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 12, "{alerts:?}");
    for alert in alerts {
        assert!(
            operations.contains(&format!("\n#### {alert}\n")),
            "docs/src/operations.md has no section for {alert}"
        );
    }
}
