//! `switchyard seed-demo`: a demo tenant with owner, manager and staff logins, two venues and stations of
//! several kinds. Running it again changes nothing.

use serde_json::json;
use switchyard_core::stations::{self, NewStation};
use switchyard_core::venues::{self, NewVenue};
use switchyard_core::{members, Actor, Role, StationControl as C, StationKind as K, TenantId};

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
            .login(owner_email, owner_password, None)
            .await?;
        tracing::info!("demo tenant already seeded");
        return Ok(TenantId(pair.tenant_id));
    }
    let pair = state
        .accounts
        .signup(DEMO_ORGANIZATION, owner_email, owner_password, None)
        .await?;
    let tenant = TenantId(pair.tenant_id);
    let owner = state
        .accounts
        .authenticate(&pair.access_token, None)
        .await?;

    for (role, email, password) in &DEMO_LOGINS[1..] {
        let mut tx = state.db.begin_tenant(tenant).await?;
        let (_, token) = members::invite(&mut tx, &owner, email, *role).await?;
        tx.commit().await?;
        state
            .accounts
            .accept_invitation(&token, password, None)
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
        stations::create(&mut tx, &owner, input).await?;
    }
    tx.commit().await?;
    tracing::info!(tenant.id = %tenant, "demo tenant seeded");
    Ok(tenant)
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
