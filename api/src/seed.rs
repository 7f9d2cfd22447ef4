//! `switchyard seed-demo`: a demo tenant with owner, manager and staff logins, two venues, stations of several
//! kinds, tariffs, six powerbanks in the cabinet, and a gold-tier patron with 50.00 in the wallet and an RFID tag.
//! Running it again changes nothing.

use serde_json::json;
use switchyard_core::pricing::{Band, Terms};
use switchyard_core::stations::{self, NewStation, StationFilter, StationPatch};
use switchyard_core::tariffs::{self, Scope};
use switchyard_core::venues::{self, NewVenue};
use switchyard_core::{bridges, patrons};
use switchyard_core::{
    members, rentals, Actor, Role, StationControl as C, StationKind as K, TenantId,
};

use crate::app::AppState;

/// The demo logins: (role, email, password). Demo data only; never used outside a local demo.
pub const DEMO_LOGINS: [(Role, &str, &str); 3] = [
    (Role::Owner, "owner@demo.switchyard.test", "Neon-Arcade-42"),
    (
        Role::Manager,
        "manager@demo.switchyard.test",
        "Harbour-Lights-42",
    ),
    (Role::Staff, "staff@demo.switchyard.test", "Pixel-Floor-42"),
];

pub const DEMO_ORGANIZATION: &str = "Demo Play & Charge";
pub const DEMO_PATRON: &str = "Dana Demo";
/// The demo patron's patron-app login (`POST /api/v1/auth/patron/login` with the demo tenant's id).
pub const DEMO_PATRON_LOGIN: (&str, &str) = ("patron@demo.switchyard.test", "Golden-Ticket-42");

fn terms() -> Terms {
    Terms::base("EUR")
}

/// Seeds the demo tenant unless its owner exists; returns the tenant id either way.
pub async fn seed_demo(state: &AppState) -> anyhow::Result<TenantId> {
    let (_, owner_email, owner_password) = DEMO_LOGINS[0];
    if state
        .db
        .system()
        .user_by_email(owner_email)
        .await?
        .is_some()
    {
        let pair = state
            .accounts
            .login(owner_email, owner_password, None, None)
            .await?;
        tracing::info!("demo tenant already seeded");
        let owner = member(state, &pair.access_token).await?;
        demo_documents(state, &owner).await?;
        return Ok(TenantId(pair.tenant_id));
    }
    let outcome = state
        .accounts
        .signup(
            DEMO_ORGANIZATION,
            owner_email,
            owner_password,
            switchyard_core::notify::Locale::En,
            None,
            None,
        )
        .await?;
    if matches!(
        outcome,
        switchyard_core::accounts::SignupOutcome::EmailTaken
    ) {
        anyhow::bail!("the demo owner's email already has a login outside the demo");
    }
    let pair = state
        .accounts
        .login(owner_email, owner_password, None, None)
        .await?;
    let tenant = TenantId(pair.tenant_id);
    let owner = member(state, &pair.access_token).await?;

    for (role, email, password) in &DEMO_LOGINS[1..] {
        let mut tx = state.db.begin_tenant(tenant).await?;
        let (_, token) = members::invite(&mut tx, &owner, email, *role).await?;
        tx.commit().await?;
        state
            .accounts
            .accept_invitation(&token, Some(password), None, None)
            .await?;
    }

    let mut tx = state.db.begin_tenant(tenant).await?;
    let arcade = venue(
        &mut tx,
        &owner,
        "Downtown Arcade",
        "Europe/Berlin",
        "Alexanderplatz 1, Berlin",
    )
    .await?;
    let hub = venue(
        &mut tx,
        &owner,
        "Harbour Charging Hub",
        "Europe/Berlin",
        "Hafenstrasse 5, Hamburg",
    )
    .await?;
    let stations = [
        (arcade, "PC-01", K::Pc, C::Agent, json!({}), None),
        (arcade, "PC-02", K::Pc, C::Agent, json!({}), None),
        (
            arcade,
            "PC-03",
            K::Pc,
            C::Mikrotik,
            json!({"host": "192.0.2.1", "mac": "02:00:00:00:00:03"}),
            None,
        ),
        (
            arcade,
            "PS5-01",
            K::Console,
            C::Shelly,
            json!({"host": "192.0.2.21", "generation": 2}),
            None,
        ),
        (
            arcade,
            "Pinball",
            K::Arcade,
            C::Shelly,
            json!({"host": "192.0.2.22", "generation": 1}),
            None,
        ),
        (
            arcade,
            "Karaoke Room A",
            K::KaraokeRoom,
            C::Tasmota,
            json!({"topic": "karaoke-a"}),
            None,
        ),
        (
            hub,
            "Charger 1",
            K::EvCharger,
            C::Ocpp,
            json!({"charge_point_id": "CP-001"}),
            Some(2),
        ),
        (
            hub,
            "Powerbank Cabinet",
            K::PowerbankCabinet,
            C::Manual,
            json!({}),
            Some(8),
        ),
        (hub, "Ticket Kiosk", K::Kiosk, C::Manual, json!({}), None),
    ];
    let mut cabinet = None;
    for (venue_id, name, kind, control, settings, connectors) in stations {
        let input = NewStation {
            venue_id,
            name: name.into(),
            kind,
            control,
            control_settings: Some(settings),
            location: None,
            connector_count: connectors,
        };
        let station = stations::create(&mut tx, &owner, input).await?;
        if kind == K::PowerbankCabinet {
            cabinet = Some(station.id);
        }
        // Patrons may start these from the app (by their QR codes): the console and the powerbank cabinet.
        if matches!(name, "PS5-01" | "Powerbank Cabinet") {
            let patch = StationPatch {
                self_service: Some(true),
                ..StationPatch::default()
            };
            stations::update(&mut tx, &owner, station.id, patch).await?;
        }
    }
    // Check-in at the arcade's door: within 150 m of Alexanderplatz.
    switchyard_core::patron_app::checkins::set_geofence(
        &mut tx,
        &owner,
        arcade,
        Some((52.5219, 13.4132, 150)),
    )
    .await?;

    // Tariffs: play time at the arcade (evenings cheaper, gold members 10 % off), powerbanks and charging at the hub.
    let play = Terms {
        per_minute: 8,
        billing_step_secs: 60,
        daily_cap: Some(3000),
        tier_discounts_bp: [("gold".to_owned(), 1000)].into(),
        bands: vec![Band {
            from_minute: 22 * 60,
            to_minute: 6 * 60,
            per_minute: 5,
        }],
        ..terms()
    };
    let play = tariffs::create(&mut tx, &owner, "Play time", play).await?;
    tariffs::assign(
        &mut tx,
        &owner,
        play.id,
        Scope {
            venue_id: arcade,
            station_kind: None,
            station_id: None,
        },
    )
    .await?;
    let powerbank = Terms {
        per_minute: 1,
        free_minutes: 5,
        deposit: 500,
        buyout_threshold: Some(2500),
        ..terms()
    };
    let powerbank = tariffs::create(&mut tx, &owner, "Powerbank", powerbank).await?;
    let cabinets = Scope {
        venue_id: hub,
        station_kind: Some(K::PowerbankCabinet),
        station_id: None,
    };
    tariffs::assign(&mut tx, &owner, powerbank.id, cabinets).await?;
    let charging = Terms {
        per_kwh: 39,
        per_minute: 0,
        minimum_charge: 100,
        ..terms()
    };
    let charging = tariffs::create(&mut tx, &owner, "Charging", charging).await?;
    tariffs::assign(
        &mut tx,
        &owner,
        charging.id,
        Scope {
            venue_id: hub,
            station_kind: None,
            station_id: None,
        },
    )
    .await?;
    if let Some(cabinet) = cabinet {
        for slot in 1..=6 {
            rentals::dock(&mut tx, &owner, cabinet, slot, &format!("pb-{slot:03}")).await?;
        }
    }
    tx.commit().await?;
    // The demo patron has a patron-app login too.
    let (email, password) = DEMO_PATRON_LOGIN;
    state
        .accounts
        .patron_signup(tenant.0, DEMO_PATRON, email, password, None)
        .await?;
    let mut tx = state.db.begin_tenant(tenant).await?;
    let patron = patrons::list(&mut tx, Some(email), 1)
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("the demo patron was not created"))?;
    patrons::set_tier(&mut tx, &owner, patron.id, "gold").await?;
    patrons::add_rfid_tag(&mut tx, &owner, patron.id, "04A1B2C3").await?;
    patrons::top_up_cash(&mut tx, &owner, patron.id, arcade, 5000, "demo-seed").await?;
    tx.commit().await?;
    demo_documents(state, &owner).await?;
    tracing::info!(tenant.id = %tenant, "demo tenant seeded");
    Ok(tenant)
}

/// The demo's documents: legal details for receipts and invoices, 19 % VAT included at both venues, and seed
/// 003's two report kinds (`diagnostics`, `thickness`). Idempotent (run on every seed).
async fn demo_documents(state: &AppState, owner: &Actor) -> anyhow::Result<()> {
    use switchyard_core::documents::{self, reports};
    let mut tx = state.db.begin_tenant(owner.tenant).await?;
    documents::set_legal(
        &mut tx,
        owner,
        Some("Demo Play & Charge GmbH".into()),
        Some("Alexanderplatz 1, 10178 Berlin, Germany".into()),
        Some("DE123456789".into()),
    )
    .await?;
    for venue in venues::list(&mut tx, false).await? {
        documents::set_venue_tax(&mut tx, owner, venue.id, 1900, Some("VAT".into())).await?;
    }
    for (key, title, template) in reports::demo_kinds() {
        reports::define_kind(&mut tx, owner, key, title, template).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn venue(
    tx: &mut switchyard_core::TenantTx,
    owner: &Actor,
    name: &str,
    timezone: &str,
    address: &str,
) -> anyhow::Result<uuid::Uuid> {
    let input = NewVenue {
        name: name.into(),
        timezone: timezone.into(),
        currency: "EUR".into(),
        address: Some(address.into()),
    };
    Ok(venues::create(tx, owner, input).await?.id)
}

/// The member an access token stands for.
async fn member(state: &AppState, access_token: &str) -> anyhow::Result<Actor> {
    match state.accounts.authenticate(access_token, None).await? {
        switchyard_core::Principal::Member(actor) => Ok(actor),
        _ => anyhow::bail!("the demo owner's token is not a member's"),
    }
}

/// What the demo bridge needs to run: its token, and each agent PC's station id and key; and the harbour hub's
/// bridge (for its powerbank cabinet): its token and the cabinet for `edge-bridge cabinet-sim --cabinet`.
pub struct DemoBridge {
    pub token: String,
    pub agents: Vec<(uuid::Uuid, String)>,
    pub hub_token: String,
    pub cabinet: String,
    /// The hub's charger: its identity and a fresh password (for the simulated charger).
    pub charger: (String, String),
}

/// The demo cabinet's id on the MQTT broker.
pub const DEMO_CABINET_ID: &str = "harbour-cabinet";

/// Points the demo arcade's devices at the simulated ones on 127.0.0.1 (`demo-devices --base <base>`: the Gen2
/// plug at `base`, the Gen1 plug at `base + 1`, the router at `base + 2`), makes sure the arcade has a bridge,
/// and gives it a fresh token and its PCs fresh agent keys (only hashes are stored, so each run issues new ones).
pub async fn demo_bridge(state: &AppState, base: u16) -> anyhow::Result<DemoBridge> {
    let (_, owner_email, owner_password) = DEMO_LOGINS[0];
    let pair = state
        .accounts
        .login(owner_email, owner_password, None, None)
        .await?;
    let owner = member(state, &pair.access_token).await?;
    let mut tx = state.db.begin_tenant(owner.tenant).await?;
    let arcade = venues::list(&mut tx, false)
        .await?
        .into_iter()
        .find(|v| v.name == "Downtown Arcade")
        .ok_or_else(|| {
            anyhow::anyhow!("the demo arcade is missing; run seed-demo on a fresh database")
        })?;
    let filter = StationFilter {
        venue_id: Some(arcade.id),
        ..StationFilter::default()
    };
    let local = |offset: u16| format!("127.0.0.1:{}", base + offset);
    let mut agents = Vec::new();
    for station in stations::list(&mut tx, &filter).await? {
        let settings = match station.name.as_str() {
            "PS5-01" => json!({"host": local(0), "generation": 2}),
            "Pinball" => json!({"host": local(1), "generation": 1}),
            "PC-03" => {
                json!({"host": local(2), "mac": "02:00:00:00:00:03", "credentials_ref": "demo-router"})
            }
            _ if station.control == C::Agent => {
                let key = bridges::issue_agent_key(&mut tx, &owner, station.id).await?;
                agents.push((station.id, key));
                continue;
            }
            _ => continue,
        };
        let patch = StationPatch {
            control_settings: Some(settings),
            ..StationPatch::default()
        };
        stations::update(&mut tx, &owner, station.id, patch).await?;
    }
    let existing = bridges::list(&mut tx, Some(arcade.id))
        .await?
        .into_iter()
        .find(|b| b.revoked_at.is_none());
    let (_, token) = match existing {
        Some(bridge) => bridges::rotate(&mut tx, &owner, bridge.id).await?,
        None => bridges::create(&mut tx, &owner, arcade.id, "Arcade bridge").await?,
    };
    let (hub_token, cabinet) = demo_cabinet(&mut tx, &owner).await?;
    let charger = demo_charger(&mut tx, &owner).await?;
    tx.commit().await?;
    Ok(DemoBridge {
        token,
        agents,
        hub_token,
        cabinet,
        charger,
    })
}

/// Gives the harbour hub's charger a fresh password (only its hash is stored, so each run sets a new one): its
/// identity and password, for the simulated charger.
async fn demo_charger(
    tx: &mut switchyard_core::TenantTx,
    owner: &Actor,
) -> anyhow::Result<(String, String)> {
    let charger = switchyard_core::charging::list(tx, None, None)
        .await?
        .into_iter()
        .find(|c| c.charge_point_id == "CP-001")
        .ok_or_else(|| anyhow::anyhow!("the demo charger CP-001 is missing"))?;
    let (charger, password) =
        switchyard_core::charging::set_password(tx, owner, charger.id, false).await?;
    Ok((charger.charge_point_id, password))
}

/// Puts the harbour hub's powerbank cabinet on the cabinet protocol (`cabinet_id` [`DEMO_CABINET_ID`]), gives the
/// hub a bridge with a fresh token, and describes the cabinet as the database has it (the powerbanks docked in
/// their slots, so a rental still out from an earlier run stays out) for `edge-bridge cabinet-sim --cabinet`.
async fn demo_cabinet(
    tx: &mut switchyard_core::TenantTx,
    owner: &Actor,
) -> anyhow::Result<(String, String)> {
    let hub = venues::list(tx, false)
        .await?
        .into_iter()
        .find(|v| v.name == "Harbour Charging Hub")
        .ok_or_else(|| {
            anyhow::anyhow!("the demo hub is missing; run seed-demo on a fresh database")
        })?;
    let filter = StationFilter {
        venue_id: Some(hub.id),
        kind: Some(K::PowerbankCabinet),
        ..StationFilter::default()
    };
    let cabinet = stations::list(tx, &filter)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the demo cabinet is missing"))?;
    let patch = StationPatch {
        control: Some(C::Cabinet),
        control_settings: Some(json!({ "cabinet_id": DEMO_CABINET_ID })),
        ..StationPatch::default()
    };
    stations::update(tx, owner, cabinet.id, patch).await?;
    let slots = stations::connectors(tx, &[cabinet.id]).await?.len();
    let docked = rentals::docked(tx, cabinet.id).await?;
    let powerbanks: Vec<String> = (1..=slots)
        .map(|n| {
            docked
                .iter()
                .find(|a| a.slot == Some(n as i32))
                .map_or("-".to_owned(), |a| format!("{}@{}", a.label, 100 - 9 * n))
        })
        .collect();
    let spec = format!("{DEMO_CABINET_ID}:{slots}:{}", powerbanks.join(","));
    let existing = bridges::list(tx, Some(hub.id))
        .await?
        .into_iter()
        .find(|b| b.revoked_at.is_none());
    let (_, token) = match existing {
        Some(bridge) => bridges::rotate(tx, owner, bridge.id).await?,
        None => bridges::create(tx, owner, hub.id, "Hub bridge").await?,
    };
    Ok((token, spec))
}
