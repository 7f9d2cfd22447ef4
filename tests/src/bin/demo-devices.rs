//! `demo-devices`: the demo venue's simulated devices, for `./infra/dev.sh up`, so the demo bridge switches
//! something you can watch. At fixed local ports from `--base`:
//!
//! | port | device | demo station |
//! |---|---|---|
//! | base | Shelly Gen2 plug (RPC) | PS5-01 |
//! | base + 1 | Shelly Gen1 plug | Pinball |
//! | base + 2 | MikroTik router (RouterOS API), login `demo-router` from `--credentials` | PC-03 |
//!
//! and a Tasmota plug, topic `karaoke-a` (Karaoke Room A), on the `--mqtt` broker; with `--charger-url`, the
//! harbour hub's EV charger (OCPP 1.6, `switchyard_tests::charger_sim`) connected to the API. Every switching request a plug
//! gets, and every change of the router's rules, is printed as one line.

use std::time::Duration;

use clap::Parser;
use switchyard_tests::routeros_fake::RouterOsFake;
use switchyard_tests::shelly_fake::ShellyFake;
use switchyard_tests::tasmota_sim::TasmotaSim;

#[derive(Parser)]
#[command(name = "demo-devices", about = "The demo venue's simulated devices")]
struct Args {
    /// The first of three consecutive ports on 127.0.0.1.
    #[arg(long)]
    base: u16,
    /// The MQTT broker the Tasmota plug joins.
    #[arg(long)]
    mqtt: Option<String>,
    /// The bridge's credentials file; the router accepts its `demo-router` login.
    #[arg(long)]
    credentials: std::path::PathBuf,
    /// A simulated OCPP 1.6 charger connects here (`ws://host/ocpp/<id>`) ...
    #[arg(long, requires_all = ["charger_id", "charger_password"])]
    charger_url: Option<String>,
    /// ... with this identity ...
    #[arg(long)]
    charger_id: Option<String>,
    /// ... and this password.
    #[arg(long)]
    charger_password: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bind = |offset: u16| {
        let addr = format!("127.0.0.1:{}", args.base + offset);
        std::net::TcpListener::bind(&addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
    };
    let ps5 = ShellyFake::start_on(bind(0)?).await;
    let pinball = ShellyFake::start_on(bind(1)?).await;
    let logins: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&args.credentials)?)?;
    let login = &logins["demo-router"];
    let (user, password) = (
        login["username"].as_str().unwrap_or_default(),
        login["password"].as_str().unwrap_or_default(),
    );
    let router_listener = bind(2)?;
    router_listener.set_nonblocking(true)?;
    let router = RouterOsFake::start_on(
        tokio::net::TcpListener::from_std(router_listener)?,
        user,
        password,
        &[],
    );
    if let (Some(url), Some(id), Some(password)) =
        (&args.charger_url, &args.charger_id, &args.charger_password)
    {
        tokio::spawn(switchyard_tests::charger_sim::run(
            url.clone(),
            id.clone(),
            password.clone(),
        ));
    }
    let karaoke = match &args.mqtt {
        Some(url) => Some(TasmotaSim::start(url, "karaoke-a").await),
        None => None,
    };
    println!(
        "demo devices: PS5-01 (Shelly Gen2) {}, Pinball (Shelly Gen1) {}, PC-03 (MikroTik) {}{}",
        ps5.host(),
        pinball.host(),
        router.addr,
        if karaoke.is_some() {
            ", Karaoke Room A (Tasmota karaoke-a)"
        } else {
            ""
        }
    );
    // A demo's console output: every switching request the plugs got, and the router's state as it changes.
    let mut seen = [0usize; 3];
    let mut router_open: Option<bool> = None;
    let mut look = tokio::time::interval(Duration::from_millis(250));
    loop {
        look.tick().await;
        let plugs: [(&str, Vec<bool>); 3] = [
            ("PS5-01 plug", ps5.switches().iter().map(|s| s.on).collect()),
            (
                "Pinball plug",
                pinball.switches().iter().map(|s| s.on).collect(),
            ),
            (
                "Karaoke Room A plug",
                karaoke
                    .as_ref()
                    .map(|k| k.powers().iter().map(|p| p == "ON").collect())
                    .unwrap_or_default(),
            ),
        ];
        for (i, (name, switches)) in plugs.iter().enumerate() {
            for on in &switches[seen[i].min(switches.len())..] {
                println!("{name}: switched {}", if *on { "ON" } else { "OFF" });
            }
            seen[i] = switches.len();
        }
        // The router lets PC-03 through when no drop rule names it.
        let open = router.rules().is_empty();
        if router_open != Some(open) && !router.logins().is_empty() {
            println!("PC-03 network: {}", if open { "open" } else { "blocked" });
            router_open = Some(open);
        }
    }
}
