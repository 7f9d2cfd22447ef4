//! Chargers (OCPP): their registration and password, what they report, the calls made to them (remote commands,
//! configuration, local lists, reservations, power limits), their transactions, and the RFID tags they judge.
//! Sessions on chargers start and stop through the ordinary session mutations (`startSession`, `stopSession`,
//! the patron app's `startMySession`): on an `ocpp` station they become RemoteStart/RemoteStop calls.

use async_graphql::{ComplexObject, Context, Enum, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::charging::{self, calls, tags, transactions};
use switchyard_core::scope::{self, Named};
use switchyard_core::Db;
use uuid::Uuid;

use crate::{begin, GqlResult, ManagerGuard};

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Charger {
    pub id: Uuid,
    /// None until an operator adopts the charger (while it is pending or refused).
    pub station_id: Option<Uuid>,
    pub venue_id: Option<Uuid>,
    /// The identity in its URL: `/ocpp/{chargePointId}`.
    pub charge_point_id: String,
    /// `pending` (waiting to be adopted), `accepted`, `rejected`.
    pub registration: String,
    /// `ocpp1.6` or `ocpp2.0.1`, as it last connected.
    pub protocol: Option<String>,
    pub vendor: String,
    pub model: String,
    pub serial_number: String,
    pub firmware_version: String,
    pub boot_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Connected now (directly or through its venue's bridge).
    pub online: bool,
    /// The bridge it is connected through, if any.
    pub via_bridge: Option<Uuid>,
    /// The local authorization list version it last accepted.
    pub local_list_version: i64,
    /// The power limit a charging profile set (W).
    pub power_limit_w: Option<i32>,
    /// The configuration it reported (GetConfiguration / GetVariables answers: each read replaces the keys or
    /// variables it names, a 1.6 read of every key replaces it all), with the values it has since accepted.
    pub configuration: async_graphql::Json<serde_json::Value>,
    pub has_password: bool,
    /// A new password is on its way to the charger (or it refused it): until the charger is known to use it, the
    /// password it had before still lets it in.
    pub password_pending: bool,
    /// It accepted a configuration change (`ChangeConfiguration` or `SetVariables`, an operator's or the meter
    /// set-up's) that takes effect only after a reboot, and no boot since was taken for one. A boot is, unless a
    /// 2.0.1 charger says the central system triggered it or it came on the connection that answered (a reboot drops
    /// the connection). A 1.6 charger does not say why it booted: one that sends a boot after a mere reconnection
    /// is taken as rebooted. A reboot while its edge bridge's tunnel is down is not heard (the bridge answers the
    /// boot). A soft reset applies it.
    pub reboot_required: bool,
    pub created_at: DateTime<Utc>,
}

impl From<charging::Charger> for Charger {
    fn from(c: charging::Charger) -> Self {
        Self {
            id: c.id,
            station_id: c.station_id,
            venue_id: c.venue_id,
            charge_point_id: c.charge_point_id,
            registration: format!("{:?}", c.registration).to_lowercase(),
            protocol: c.protocol,
            vendor: c.vendor,
            model: c.model,
            serial_number: c.serial_number,
            firmware_version: c.firmware_version,
            boot_at: c.boot_at,
            last_seen_at: c.last_seen_at,
            online: c.online,
            via_bridge: c.via_bridge,
            local_list_version: c.local_list_version,
            power_limit_w: c.power_limit_w,
            configuration: async_graphql::Json(c.configuration),
            has_password: c.has_password,
            password_pending: c.password_pending,
            reboot_required: c.reboot_required,
            created_at: c.created_at,
        }
    }
}

#[ComplexObject]
impl Charger {
    /// Its transactions, newest first.
    #[graphql(complexity = "crate::rows(limit, child_complexity)")]
    async fn transactions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50, validator(minimum = 1, maximum = 500))] limit: i64,
    ) -> async_graphql::Result<Vec<ChargingTransaction>> {
        let Some(station) = self.station_id else {
            return Ok(Vec::new());
        };
        let (_, mut tx) = begin(ctx).await?;
        Ok(transactions::list(&mut tx, station, limit)
            .await
            .gql()?
            .into_iter()
            .filter(|t| t.charger_id == self.id)
            .map(ChargingTransaction::from)
            .collect())
    }

    /// The calls made to it, newest first.
    #[graphql(
        guard = "ManagerGuard",
        complexity = "crate::rows(limit, child_complexity)"
    )]
    async fn calls(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50, validator(minimum = 1, maximum = 500))] limit: i64,
    ) -> async_graphql::Result<Vec<ChargerCall>> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(calls::list(&mut tx, self.id, limit)
            .await
            .gql()?
            .into_iter()
            .map(ChargerCall::from)
            .collect())
    }
}

/// A charger and its new HTTP Basic password: shown this once (only a hash is kept).
#[derive(SimpleObject)]
pub struct ChargerWithPassword {
    pub charger: Charger,
    pub password: String,
}

#[derive(SimpleObject)]
pub struct ChargingTransaction {
    pub id: Uuid,
    pub charger_id: Uuid,
    pub station_id: Uuid,
    pub connector: i32,
    /// Its id in OCPP (1.6: the integer handed out; 2.0.1: the charger's).
    pub ocpp_id: String,
    /// The tag presented; none for free vend, and none while pending (a refused tag leaves it pending: see the
    /// audit log's `charging.unbilled_transaction`).
    pub id_tag: Option<String>,
    /// How the tag was judged at its start (`Accepted`, `Invalid`, `Blocked`, `NoCredit` ...), or, with no tag,
    /// `FreeVend` (a 2.0.1 charger charging without asking anyone: kept, billed to no one) or `Pending` (a 2.0.1
    /// transaction begun before a token, such as at the cable plugged in: billed once an accepted token comes).
    pub auth_status: String,
    /// The session that bills it (none when its tag was not accepted, or its station could not bill: kept, not
    /// billed).
    pub session_id: Option<Uuid>,
    /// The energy register (Wh) at the start and at the last reading; none until the charger's first reading (a
    /// 2.0.1 start may carry none: the first reading is then the baseline).
    pub meter_start_wh: Option<i64>,
    pub meter_last_wh: Option<i64>,
    pub energy_wh: i64,
    pub power_w: Option<i32>,
    pub started_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub stop_reason: Option<String>,
    /// Run while the charger's link was down, reported afterwards.
    pub offline: bool,
}

impl From<transactions::Transaction> for ChargingTransaction {
    fn from(t: transactions::Transaction) -> Self {
        Self {
            energy_wh: t.energy_wh(),
            id: t.id,
            charger_id: t.charger_id,
            station_id: t.station_id,
            connector: t.connector,
            ocpp_id: t.ocpp_id,
            id_tag: t.id_tag,
            auth_status: t.auth_status,
            session_id: t.session_id,
            meter_start_wh: t.meter_start_wh,
            meter_last_wh: t.meter_last_wh,
            power_w: t.power_w,
            started_at: t.started_at,
            stopped_at: t.stopped_at,
            stop_reason: t.stop_reason,
            offline: t.offline,
        }
    }
}

/// A call from the central system to a charger.
#[derive(SimpleObject)]
pub struct ChargerCall {
    pub id: Uuid,
    pub charger_id: Uuid,
    /// The OCPP action (`RemoteStartTransaction`, `Reset`, `SendLocalList` ...).
    pub action: String,
    pub payload: async_graphql::Json<serde_json::Value>,
    /// `pending` (waiting for the charger), `sent`, `answered`, `error`, `timeout`, `expired`.
    pub status: String,
    /// The charger's answer.
    pub response: Option<async_graphql::Json<serde_json::Value>>,
    pub error: Option<String>,
    pub session_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
}

impl From<calls::Call> for ChargerCall {
    fn from(c: calls::Call) -> Self {
        // A password on its way to the charger is shown to no one.
        let payload = calls::without_secrets(&c.action, &c.payload).unwrap_or(c.payload);
        Self {
            id: c.id,
            charger_id: c.charger_id,
            action: c.action,
            payload: async_graphql::Json(payload),
            status: c.status,
            response: c.response.map(async_graphql::Json),
            error: c.error,
            session_id: c.session_id,
            created_at: c.created_at,
            sent_at: c.sent_at,
            answered_at: c.answered_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct RfidTag {
    pub uid: String,
    /// None for a tag first seen in a charger's offline transaction (kept blocked until given to a patron).
    pub patron_id: Option<Uuid>,
    pub blocked: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// OCPP's parent (group) tag: blocking the parent blocks the tag.
    pub parent_uid: Option<String>,
    /// The local-list version of its last change.
    pub version: i64,
    /// Its patron owed a debt or held no funds when the chargers' local lists last heard of the tag: a charger or a
    /// bridge that cannot reach the cloud refuses it (`NoCredit`). The workers follow the patron's money.
    pub no_credit: bool,
}

impl From<tags::Tag> for RfidTag {
    fn from(t: tags::Tag) -> Self {
        Self {
            uid: t.uid,
            patron_id: t.patron_id,
            blocked: t.blocked,
            expires_at: t.expires_at,
            parent_uid: t.parent_uid,
            version: t.version,
            no_credit: t.no_credit,
        }
    }
}

#[derive(Default)]
pub struct ChargingQuery;

#[Object]
impl ChargingQuery {
    /// The tenant's chargers (of one venue when `venueId` is given); without `venueId`, those not adopted yet too
    /// (pending or refused: they have no venue), for any manager.
    #[graphql(guard = "ManagerGuard")]
    async fn chargers(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<Uuid>,
    ) -> async_graphql::Result<Vec<Charger>> {
        let (actor, mut tx) = begin(ctx).await?;
        let rows = charging::list(&mut tx, venue_id, actor.venues.as_deref())
            .await
            .gql()?
            .into_iter()
            .map(Charger::from)
            .collect();
        scope::listed(&mut tx, actor, rows, &[Named::Venue(venue_id)])
            .await
            .gql()
    }

    /// A charger by its id, or the charger of a station.
    #[graphql(guard = "ManagerGuard")]
    async fn charger(
        &self,
        ctx: &Context<'_>,
        id: Option<Uuid>,
        station_id: Option<Uuid>,
    ) -> async_graphql::Result<Charger> {
        let (actor, mut tx) = begin(ctx).await?;
        let charger = match (id, station_id) {
            (Some(id), None) => charging::get(&mut tx, id).await.gql()?,
            (None, Some(station)) => charging::of_station(&mut tx, station).await.gql()?,
            _ => {
                return Err(crate::coded(
                    switchyard_core::ErrorCode::ValidationFailed,
                    "give either id or stationId",
                ))
            }
        };
        charger.check_scope(actor, "charger").gql()?;
        Ok(charger.into())
    }

    /// A call made to a charger (follow a command's progress).
    #[graphql(guard = "ManagerGuard")]
    async fn charger_call(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<ChargerCall> {
        let (actor, mut tx) = begin(ctx).await?;
        let call = calls::get(&mut tx, id).await.gql()?;
        let charger = charging::get(&mut tx, call.charger_id).await.gql()?;
        charger.check_scope(actor, "charger call").gql()?;
        Ok(call.into())
    }

    /// The tenant's RFID tags with their charger settings.
    #[graphql(
        guard = "ManagerGuard",
        complexity = "crate::rows(limit, child_complexity)"
    )]
    async fn rfid_tags(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 200, validator(minimum = 1, maximum = 1000))] limit: i64,
    ) -> async_graphql::Result<Vec<RfidTag>> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(tags::list(&mut tx, limit)
            .await
            .gql()?
            .into_iter()
            .map(RfidTag::from)
            .collect())
    }
}

/// What to ask of a charger.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ChargerCommandKind {
    /// Reboot when idle (1.6 `Soft`, 2.0.1 `OnIdle`).
    SoftReset,
    /// Reboot now (1.6 `Hard`, 2.0.1 `Immediate`).
    HardReset,
    UnlockConnector,
    /// Put a connector (0: the whole charger) in or out of service (`operative`).
    ChangeAvailability,
    /// Ask for a message (`message`: BootNotification, Heartbeat, MeterValues, StatusNotification ...).
    TriggerMessage,
    /// Read its configuration (`keys`; 2.0.1: `Component.Variable` names).
    GetConfiguration,
    /// Set one key (`key`, `value`; 2.0.1: `Component.Variable`).
    ChangeConfiguration,
    /// Limit its power (`watts`), or clear the limit (no `watts`).
    SetPowerLimit,
    /// Send the whole local authorization list again.
    SyncLocalList,
    GetLocalListVersion,
    /// A vendor message (`vendorId`, `messageId`, `data`).
    DataTransfer,
}

#[derive(InputObject)]
pub struct ChargerCommandInput {
    pub kind: ChargerCommandKind,
    pub connector: Option<i32>,
    pub operative: Option<bool>,
    pub message: Option<String>,
    #[graphql(default)]
    pub keys: Vec<String>,
    pub key: Option<String>,
    pub value: Option<String>,
    pub watts: Option<i32>,
    pub vendor_id: Option<String>,
    pub message_id: Option<String>,
    pub data: Option<String>,
}

fn required<T>(value: Option<T>, field: &'static str) -> async_graphql::Result<T> {
    value.ok_or_else(|| {
        crate::coded(
            switchyard_core::ErrorCode::ValidationFailed,
            format!("this command needs `{field}`"),
        )
    })
}

impl ChargerCommandInput {
    fn command(self) -> async_graphql::Result<calls::Command> {
        use calls::Command;
        Ok(match self.kind {
            ChargerCommandKind::SoftReset => Command::Reset { hard: false },
            ChargerCommandKind::HardReset => Command::Reset { hard: true },
            ChargerCommandKind::UnlockConnector => Command::UnlockConnector {
                connector: required(self.connector, "connector")?,
            },
            ChargerCommandKind::ChangeAvailability => Command::ChangeAvailability {
                connector: self.connector.unwrap_or(0),
                operative: required(self.operative, "operative")?,
            },
            ChargerCommandKind::TriggerMessage => Command::Trigger {
                message: required(self.message, "message")?,
                connector: self.connector,
            },
            ChargerCommandKind::GetConfiguration => Command::GetConfiguration { keys: self.keys },
            ChargerCommandKind::ChangeConfiguration => Command::ChangeConfiguration {
                key: required(self.key, "key")?,
                value: required(self.value, "value")?,
            },
            ChargerCommandKind::SetPowerLimit => Command::PowerLimit { watts: self.watts },
            ChargerCommandKind::SyncLocalList => Command::SyncLocalList,
            ChargerCommandKind::GetLocalListVersion => Command::GetLocalListVersion,
            ChargerCommandKind::DataTransfer => Command::DataTransfer {
                vendor_id: required(self.vendor_id, "vendorId")?,
                message_id: self.message_id,
                data: self.data,
            },
        })
    }
}

/// What changes about a tag; fields left out keep their value.
#[derive(InputObject)]
pub struct RfidTagPatch {
    pub blocked: Option<bool>,
    pub expires_at: Option<DateTime<Utc>>,
    #[graphql(default)]
    pub clear_expiry: bool,
    pub parent_uid: Option<String>,
    #[graphql(default)]
    pub clear_parent: bool,
    /// Gives an unowned tag (from a charger's offline transaction) to a patron.
    pub patron_id: Option<Uuid>,
}

#[derive(SimpleObject)]
pub struct ChargerReservation {
    /// The reservation's id (OCPP's reservationId).
    pub id: i32,
    pub call: ChargerCall,
}

/// Waits until a call is answered (or failed), up to `seconds`, looking again every 100 ms; returns it as it is
/// then.
async fn follow(
    ctx: &Context<'_>,
    call: calls::Call,
    seconds: i32,
) -> async_graphql::Result<ChargerCall> {
    let (actor, _) = (crate::actor(ctx)?, ());
    let db = ctx.data::<Db>()?;
    let until =
        tokio::time::Instant::now() + std::time::Duration::from_secs(seconds.clamp(0, 30) as u64);
    let mut call = call;
    while matches!(call.status.as_str(), "pending" | "sent") && tokio::time::Instant::now() < until
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut tx = db.begin_tenant(actor.tenant).await.gql()?;
        call = calls::get(&mut tx, call.id).await.gql()?;
        tx.commit().await.gql()?;
    }
    Ok(call.into())
}

#[derive(Default)]
pub struct ChargingMutation;

#[Object]
impl ChargingMutation {
    /// A new HTTP Basic password for a charger (shown once). An offline charger's old password stops working at
    /// once (configure the new one on the charger by hand). A connected charger is sent the new one, and its old
    /// one still lets it in until it is known to use the new one (`passwordPending`). With `revokeOld` (a password
    /// that leaked) the old one stops working at once and a connected charger is disconnected, not sent the new
    /// one: configure it on the charger by hand.
    #[graphql(guard = "ManagerGuard")]
    async fn set_charger_password(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        #[graphql(default = false)] revoke_old: bool,
    ) -> async_graphql::Result<ChargerWithPassword> {
        let (actor, mut tx) = begin(ctx).await?;
        let (charger, password) = charging::set_password(&mut tx, actor, id, revoke_old)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(ChargerWithPassword {
            charger: charger.into(),
            password,
        })
    }

    /// Adopts a pending (or refused) charger onto an `ev_charger` station: it is accepted, gets a new password
    /// (shown once; sent to it when connected) and is asked to boot again.
    #[graphql(guard = "ManagerGuard")]
    async fn adopt_charger(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        station_id: Uuid,
    ) -> async_graphql::Result<ChargerWithPassword> {
        let (actor, mut tx) = begin(ctx).await?;
        let (charger, password) = charging::adopt(&mut tx, actor, id, station_id)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(ChargerWithPassword {
            charger: charger.into(),
            password,
        })
    }

    /// Refuses a pending charger: it is rejected, the onboarding key no longer opens it, and a connected one is
    /// disconnected. Its identity stays taken (it cannot join as pending again); `adoptCharger` may still adopt it,
    /// then its new password is set on it by hand.
    #[graphql(guard = "ManagerGuard")]
    async fn reject_charger(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Charger> {
        let (actor, mut tx) = begin(ctx).await?;
        let charger = charging::reject(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(charger.into())
    }

    /// Forgets a refused charger: it and the calls made to it are deleted, and its identity is free again (with the
    /// onboarding key it may join as pending anew). Answers the identity forgotten; `conflict` for a charger not
    /// refused.
    #[graphql(guard = "ManagerGuard")]
    async fn forget_charger(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<String> {
        let (actor, mut tx) = begin(ctx).await?;
        let identity = charging::forget(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(identity)
    }

    /// Owners: whether a charger with an unregistered identity may join as pending by presenting the onboarding
    /// key as its password; `newKey` returns a new key (shown once).
    #[graphql(guard = "ManagerGuard")]
    async fn set_charger_onboarding(
        &self,
        ctx: &Context<'_>,
        accept_pending: bool,
        #[graphql(default)] new_key: bool,
    ) -> async_graphql::Result<Option<String>> {
        let (actor, mut tx) = begin(ctx).await?;
        let key = charging::set_onboarding(&mut tx, actor, accept_pending, new_key)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(key)
    }

    /// Asks a charger something; the call goes out when the charger is connected (to whichever API replica holds
    /// it). With `waitSeconds` (up to 30) the answer is awaited, else follow it with `chargerCall`.
    #[graphql(guard = "ManagerGuard")]
    async fn charger_command(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        command: ChargerCommandInput,
        #[graphql(default = 0, validator(minimum = 0, maximum = 30))] wait_seconds: i32,
    ) -> async_graphql::Result<ChargerCall> {
        let command = command.command()?;
        let (actor, mut tx) = begin(ctx).await?;
        let call = calls::command(&mut tx, actor, id, command).await.gql()?;
        tx.commit().await.gql()?;
        follow(ctx, call, wait_seconds).await
    }

    /// Reserves a connector (0: any) of a charger for a patron (with its first unblocked tag) until `expiresAt`.
    #[graphql(guard = "ManagerGuard")]
    async fn reserve_charger(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        #[graphql(default = 0)] connector: i32,
        patron_id: Uuid,
        expires_at: DateTime<Utc>,
        #[graphql(default = 0, validator(minimum = 0, maximum = 30))] wait_seconds: i32,
    ) -> async_graphql::Result<ChargerReservation> {
        let (actor, mut tx) = begin(ctx).await?;
        let (reservation, call) =
            transactions::reserve(&mut tx, actor, id, connector, patron_id, expires_at)
                .await
                .gql()?;
        tx.commit().await.gql()?;
        Ok(ChargerReservation {
            id: reservation,
            call: follow(ctx, call, wait_seconds).await?,
        })
    }

    #[graphql(guard = "ManagerGuard")]
    async fn cancel_charger_reservation(
        &self,
        ctx: &Context<'_>,
        reservation_id: i32,
        #[graphql(default = 0, validator(minimum = 0, maximum = 30))] wait_seconds: i32,
    ) -> async_graphql::Result<ChargerCall> {
        let (actor, mut tx) = begin(ctx).await?;
        let call = transactions::cancel_reservation(&mut tx, actor, reservation_id)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        follow(ctx, call, wait_seconds).await
    }

    /// Changes an RFID tag's charger settings; every connected charger's local list follows.
    #[graphql(guard = "ManagerGuard")]
    async fn update_rfid_tag(
        &self,
        ctx: &Context<'_>,
        uid: String,
        patch: RfidTagPatch,
    ) -> async_graphql::Result<RfidTag> {
        let (actor, mut tx) = begin(ctx).await?;
        let patch = tags::TagPatch {
            blocked: patch.blocked,
            expires_at: if patch.clear_expiry {
                Some(None)
            } else {
                patch.expires_at.map(Some)
            },
            parent_uid: if patch.clear_parent {
                Some(None)
            } else {
                patch.parent_uid.map(Some)
            },
            patron_id: patch.patron_id,
        };
        let tag = tags::update(&mut tx, actor, &uid, patch).await.gql()?;
        tx.commit().await.gql()?;
        Ok(tag.into())
    }
}
