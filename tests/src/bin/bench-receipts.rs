//! `bench-receipts`: how long a receipt PDF takes. It renders a typical receipt (issuer, venue, six priced lines,
//! tax, payment) `--count` times with the same code the API uses (`documents::receipts::render`) and prints the
//! p50, p99 and max generation time and the size; then, when `S3_BUCKET` is set (`./infra/dev.sh bench receipts`
//! starts the local S3-compatible server), stores `--stored` of them and prints the generation-and-upload time too.

#![expect(
    clippy::expect_used,
    reason = "a benchmark program: a failed setup step should stop it at once"
)]

use std::time::{Duration, Instant};

use chrono::Utc;
use switchyard_core::documents::receipts::{render, ReceiptData};
use switchyard_core::documents::{tax, Legal, Store, StoreSettings};
use switchyard_core::pricing::Line;
use switchyard_core::sessions::SessionStatus;
use switchyard_tests::bench_arg as arg;
use uuid::Uuid;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    println!(
        "{what}: n={} p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        times.len(),
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
}

fn receipt() -> ReceiptData {
    let now = Utc::now();
    let lines = vec![
        Line {
            kind: "free_period".into(),
            description: "first 5 min free".into(),
            amount: 0,
        },
        Line {
            kind: "time".into(),
            description: "85 min at 0.08/min (day rate)".into(),
            amount: 680,
        },
        Line {
            kind: "time".into(),
            description: "30 min at 0.05/min (night rate, 22:00-06:00)".into(),
            amount: 150,
        },
        Line {
            kind: "energy".into(),
            description: "12.400 kWh at 0.39/kWh".into(),
            amount: 484,
        },
        Line {
            kind: "minimum_charge".into(),
            description: "minimum charge 1.00 reached".into(),
            amount: 0,
        },
        Line {
            kind: "tier_discount".into(),
            description: "gold tier 10 % off".into(),
            amount: -131,
        },
    ];
    let total = lines.iter().map(|l| l.amount).sum();
    ReceiptData {
        legal: Legal {
            name: "Demo Play & Charge".into(),
            legal_name: Some("Demo Play & Charge GmbH".into()),
            legal_address: Some("Alexanderplatz 1, 10178 Berlin, Germany".into()),
            tax_id: Some("DE123456789".into()),
        },
        venue_name: "Downtown Arcade".into(),
        venue_address: "Alexanderplatz 1, Berlin".into(),
        timezone: "Europe/Berlin".into(),
        station_name: "PC-01".into(),
        patron_name: Some("Dana Demo".into()),
        session_id: Uuid::now_v7(),
        kind: "Session",
        status: SessionStatus::Ended,
        started_at: now - chrono::Duration::minutes(120),
        ended_at: now,
        energy_wh: 12_400,
        currency: "EUR".into(),
        split: tax::split(total, 1900),
        lines,
        tax_label: "VAT".into(),
        payment_method: "wallet".into(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count = arg("count", 5000) as usize;
    let stored = arg("stored", 200) as usize;
    let data = receipt();
    // Warm-up (first-use allocations, page faults).
    let size = (0..50).map(|_| render(&data).len()).max().unwrap_or(0);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let bytes = render(&data);
        times.push(started.elapsed());
        assert!(bytes.starts_with(b"%PDF-"));
    }
    println!("receipt PDF: {size} bytes, 1 page, 6 priced lines");
    report("generation", times);

    let settings = StoreSettings::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))?;
    let store = Store::new(&settings);
    if !store.is_on() || stored == 0 {
        println!("(S3_BUCKET unset: no upload figures)");
        return Ok(());
    }
    let tenant = switchyard_core::TenantId(Uuid::now_v7());
    let mut times = Vec::with_capacity(stored);
    for _ in 0..stored {
        let started = Instant::now();
        let bytes = render(&data);
        let key = switchyard_core::documents::store::key(tenant, "receipts", Uuid::now_v7());
        store.put_pdf(&key, bytes).await.expect("upload");
        times.push(started.elapsed());
    }
    report(
        &format!(
            "generation + upload to {}",
            settings.endpoint.as_deref().unwrap_or("S3")
        ),
        times,
    );
    Ok(())
}
