//! `bench-bridge`: the edge bridge's memory with many devices. It starts a stand-in cloud (a WebSocket server
//! speaking the tunnel protocol) whose schedule lists `--devices` Shelly Gen2 plugs (half of them on for an hour),
//! and one HTTP server playing all the plugs; then it runs the real `edge-bridge` binary next to it, waits until
//! every device has been read and switched and every event acknowledged, lets a few heartbeats (and readings of
//! every device, every 500 ms) pass, and prints the bridge's resident memory (VmRSS, and the peak VmHWM) and the
//! size of the binary, stripped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use switchyard_edge_protocol::{decode, encode, Down, StationPlan, Up};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 200)]
    devices: usize,
}

#[derive(Default)]
struct Counters {
    reads: AtomicUsize,
    switches: AtomicUsize,
    acked: AtomicUsize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let counters = Arc::new(Counters::default());

    // All the plugs: one tiny HTTP server answering Switch.GetStatus and Switch.Set, each plug at its own path
    // (`host` = `<addr>/plug-<i>`) with its own relay state.
    let plugs = TcpListener::bind("127.0.0.1:0").await?;
    let plug_addr = plugs.local_addr()?;
    let c = counters.clone();
    let relays: Arc<std::sync::Mutex<std::collections::HashMap<String, bool>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = plugs.accept().await {
            let (c, relays) = (c.clone(), relays.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let Ok(n) = stream.read(&mut buf).await else {
                    return;
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or_default();
                let plug = path.split('/').nth(1).unwrap_or_default().to_owned();
                let body = {
                    let mut relays = relays.lock().unwrap_or_else(|e| e.into_inner());
                    if path.contains("Switch.Set") {
                        c.switches.fetch_add(1, Ordering::Relaxed);
                        let was = relays
                            .insert(plug, path.contains("on=true"))
                            .unwrap_or(false);
                        format!(r#"{{"was_on":{was}}}"#)
                    } else {
                        c.reads.fetch_add(1, Ordering::Relaxed);
                        let on = relays.get(&plug).copied().unwrap_or(false);
                        let power = if on { 120.0 } else { 0.0 };
                        format!(
                            r#"{{"id":0,"output":{on},"apower":{power},"aenergy":{{"total":1.0}}}}"#
                        )
                    }
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });

    // The stand-in cloud.
    let cloud = TcpListener::bind("127.0.0.1:0").await?;
    let cloud_addr = cloud.local_addr()?;
    let devices = args.devices;
    let c = counters.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = cloud.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let until = chrono::Utc::now() + chrono::Duration::hours(1);
                let stations: Vec<StationPlan> = (0..devices)
                    .map(|i| StationPlan {
                        station_id: Uuid::new_v4(),
                        name: format!("plug-{i}"),
                        control: "shelly".into(),
                        settings: serde_json::json!({"host": format!("{plug_addr}/plug-{i}"), "generation": 2}),
                        on: i % 2 == 0,
                        until: (i % 2 == 0).then_some(until),
                        session_id: None,
                    })
                    .collect();
                while let Some(Ok(frame)) = ws.next().await {
                    let Message::Text(text) = frame else { continue };
                    let reply = match decode::<Up>(&text) {
                        Ok(Up::Hello { .. }) => {
                            let welcome = Down::Welcome {
                                bridge_id: Uuid::new_v4(),
                                venue_id: Uuid::new_v4(),
                                server_time: chrono::Utc::now(),
                                last_seq: 0,
                                features: vec![],
                                max_frames_per_sec: None,
                            };
                            if ws.send(Message::text(encode(&welcome))).await.is_err() {
                                return;
                            }
                            Some(Down::Schedule {
                                stations: stations.clone(),
                            })
                        }
                        Ok(Up::Event { seq, .. }) => {
                            c.acked.fetch_add(1, Ordering::Relaxed);
                            Some(Down::Ack { seq })
                        }
                        Ok(Up::Heartbeat { sent_at, .. }) => Some(Down::HeartbeatAck {
                            sent_at,
                            server_time: chrono::Utc::now(),
                        }),
                        _ => None,
                    };
                    if let Some(reply) = reply {
                        if ws.send(Message::text(encode(&reply))).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });

    let exe = std::env::current_exe()?;
    let bridge_bin = exe.with_file_name("edge-bridge");
    let journal =
        std::env::temp_dir().join(format!("bench-bridge-{}.jsonl", Uuid::new_v4().simple()));
    let mut bridge = tokio::process::Command::new(&bridge_bin)
        .env(
            "BRIDGE_CLOUD_URL",
            format!("ws://{cloud_addr}/edge/v1/tunnel"),
        )
        .env("BRIDGE_TOKEN", "bench")
        .env("BRIDGE_JOURNAL", &journal)
        .env("BRIDGE_HEARTBEAT_MS", "200")
        // Every device read twice a second, so the memory includes the readings' work.
        .env("BRIDGE_READINGS_MS", "500")
        .env("BRIDGE_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = bridge.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let started = Instant::now();
    // Every device read, half switched on, and one event per read and per switch acknowledged.
    let expected_events = devices + devices / 2;
    while counters.acked.load(Ordering::Relaxed) < expected_events {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the bridge did not settle in 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = started.elapsed();
    // A few heartbeats more, then read its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let (rss, peak) = (field("VmRSS:"), field("VmHWM:"));
    bridge.start_kill()?;
    let _ = bridge.wait().await;
    let _ = std::fs::remove_file(&journal);

    let stripped: PathBuf =
        std::env::temp_dir().join(format!("edge-bridge-stripped-{}", Uuid::new_v4().simple()));
    let strip = std::process::Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&bridge_bin)
        .status();
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!("devices: {devices} Shelly Gen2 plugs (half on), all read, switched and acknowledged in {settled:.2?}");
    println!(
        "plug requests: {} reads, {} switches; events acknowledged: {}",
        counters.reads.load(Ordering::Relaxed),
        counters.switches.load(Ordering::Relaxed),
        counters.acked.load(Ordering::Relaxed)
    );
    println!("bridge resident memory: VmRSS {rss}, peak VmHWM {peak}");
    println!("binary: {} bytes as built", size(&bridge_bin));
    if matches!(strip, Ok(s) if s.success()) {
        println!("binary: {} bytes stripped", size(&stripped));
        let _ = std::fs::remove_file(&stripped);
    }
    Ok(())
}
