//! The messages of the account flows and of the business events, each written in the caller's transaction.
//!
//! One-time login tokens (email verification, password reset) live in `login_token`, a table of logins like
//! `app_user` (not tenant-owned); only their SHA-256 is stored. The message that carries a token is queued in the
//! outbox of the tenant the flow happens in (see `accounts` for which tenant that is for a password reset).

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::subjects::{self, Subject, Topic};
use super::{enqueue, Channel, Kind, Locale, NewMessage};
use crate::auth;
use crate::db::TenantTx;
use crate::error::Result;
use crate::model::Role;
use crate::sessions::patron_name;

/// How long a verification code is good for.
pub const VERIFY_TTL_HOURS: i64 = 24;
/// How long a password-reset code is good for.
pub const RESET_TTL_MINUTES: i64 = 30;

/// Queues the invitation's email (the only place its token goes).
pub async fn invitation(
    tx: &mut TenantTx,
    invitation: Uuid,
    email: &str,
    role: Role,
    locale: Locale,
    token: &str,
    days: i64,
) -> Result<()> {
    enqueue(
        tx,
        NewMessage {
            event_key: format!("invitation:{invitation}"),
            channel: Channel::Email,
            recipient: email.to_owned(),
            kind: Kind::Invitation,
            locale,
            data: json!({ "role": role.as_str(), "days": days }),
            secret: Some(token.to_owned()),
        },
    )
    .await?;
    Ok(())
}

/// A one-time login token's purpose: its `login_token.purpose`, the message that carries it, how long it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginToken {
    VerifyEmail,
    PasswordReset,
}

impl LoginToken {
    fn kind(self) -> Kind {
        match self {
            LoginToken::VerifyEmail => Kind::VerifyEmail,
            LoginToken::PasswordReset => Kind::PasswordReset,
        }
    }

    fn ttl_minutes(self) -> i64 {
        match self {
            LoginToken::VerifyEmail => VERIFY_TTL_HOURS * 60,
            LoginToken::PasswordReset => RESET_TTL_MINUTES,
        }
    }
}

/// Issues a one-time token for `user` (only its SHA-256 is stored) and queues the message that carries it to `email`.
async fn issue_login_token(
    tx: &mut TenantTx,
    purpose: LoginToken,
    user: Uuid,
    email: &str,
    locale: Locale,
) -> Result<()> {
    let kind = purpose.kind();
    let token = auth::random_token();
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into login_token (id, user_id, purpose, token_hash, expires_at)
         values ($1, $2, $3, $4, now() + make_interval(mins => $5))",
    )
    .bind(id)
    .bind(user)
    .bind(kind.as_str())
    .bind(auth::token_hash(&token))
    .bind(purpose.ttl_minutes() as i32)
    .execute(tx.conn())
    .await?;
    enqueue(
        tx,
        NewMessage {
            event_key: format!("{}:{id}", kind.as_str()),
            channel: Channel::Email,
            recipient: email.to_owned(),
            kind,
            locale,
            data: json!({}),
            secret: Some(token),
        },
    )
    .await?;
    Ok(())
}

/// Issues a verification code for `user` and queues it to `email`.
pub async fn verification(
    tx: &mut TenantTx,
    user: Uuid,
    email: &str,
    locale: Locale,
) -> Result<()> {
    issue_login_token(tx, LoginToken::VerifyEmail, user, email, locale).await
}

/// Issues a password-reset code for `user` (voiding any earlier unused one) and queues it to `email`. A code
/// issued less than a minute ago and still unused is left alone, so repeated requests cannot flood a mailbox; of
/// requests for one login at once, one issues the code (a transaction-scoped advisory lock, not waited for: the others
/// leave at once rather than hold a connection each).
pub async fn password_reset(
    tx: &mut TenantTx,
    user: Uuid,
    email: &str,
    locale: Locale,
) -> Result<()> {
    let ours: bool = sqlx::query_scalar(
        "select pg_try_advisory_xact_lock(hashtextextended('password_reset:' || $1::text, 0))",
    )
    .bind(user)
    .fetch_one(tx.conn())
    .await?;
    if !ours {
        return Ok(());
    }
    let recent: bool = sqlx::query_scalar(
        "select exists (select 1 from login_token where user_id = $1 and purpose = 'password_reset'
                        and used_at is null and created_at > now() - interval '1 minute')",
    )
    .bind(user)
    .fetch_one(tx.conn())
    .await?;
    if recent {
        return Ok(());
    }
    sqlx::query(
        "update login_token set used_at = now()
         where user_id = $1 and purpose = 'password_reset' and used_at is null",
    )
    .bind(user)
    .execute(tx.conn())
    .await?;
    issue_login_token(tx, LoginToken::PasswordReset, user, email, locale).await
}

/// A money amount for a message, with the currency's decimals: `12.34 EUR`, `1250 JPY`, `1.250 KWD`.
pub fn money(amount: i64, currency: &str) -> String {
    format!("{} {currency}", crate::money::format(amount, currency))
}

fn when(at: DateTime<Utc>, timezone: &str) -> String {
    match timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) => at
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string(),
        Err(_) => at.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// Queues the receipt of an ended session to its patron, on the channels the patron chose for receipts (email by
/// default). Once per session and channel (`session:<id>:receipt`).
pub async fn receipt(tx: &mut TenantTx, session: &crate::sessions::Session) -> Result<()> {
    let Some(ended) = session.ended_at else {
        return Ok(());
    };
    let names: Option<(String, String, String)> = sqlx::query_as(
        "select p.display_name, v.name, s.name
         from patron p, station s join venue v on v.tenant_id = s.tenant_id and v.id = s.venue_id
         where p.tenant_id = $1 and p.id = $2 and s.tenant_id = $1 and s.id = $3",
    )
    .bind(tx.tenant())
    .bind(session.patron_id)
    .bind(session.station_id)
    .fetch_optional(tx.conn())
    .await?;
    let Some((name, venue, station)) = names else {
        return Ok(());
    };
    let price = session.cost_at(ended);
    let lines: Vec<serde_json::Value> = price
        .lines
        .iter()
        .map(|l| json!({ "description": l.description, "amount": money(l.amount, &session.currency) }))
        .collect();
    // The debt account holds what is owed as a negative balance.
    let debt = -crate::ledger::balance(
        tx,
        crate::ledger::Owner::Patron(session.patron_id),
        crate::ledger::Purpose::Debt,
        &session.currency,
    )
    .await?;
    let data = json!({
        "name": name,
        "venue": venue,
        "station": station,
        "session_id": session.id,
        "started_at": when(session.started_at, &session.timezone),
        "ended_at": when(ended, &session.timezone),
        "lines": lines,
        "total": money(price.amount, &session.currency),
        "debt": (debt > 0).then(|| money(debt, &session.currency)),
    });
    subjects::to_subject(
        tx,
        Subject::Patron(session.patron_id),
        Topic::Receipts,
        Kind::Receipt,
        &format!("session:{}:receipt", session.id),
        data,
    )
    .await?;
    Ok(())
}

/// Queues an SOS to every owner and every manager who sees its venue, on the channels each chose for SOS (email,
/// SMS and push by default), each in the member's language.
pub async fn sos(tx: &mut TenantTx, sos: &crate::staff::sos::Sos) -> Result<()> {
    let recipients = venue_managers(tx, sos.venue_id).await?;
    let (venue, timezone) = venue_name(tx, sos.venue_id).await?;
    let station: Option<String> = match sos.station_id {
        Some(id) => {
            sqlx::query_scalar("select name from station where tenant_id = $1 and id = $2")
                .bind(tx.tenant())
                .bind(id)
                .fetch_optional(tx.conn())
                .await?
        }
        None => None,
    };
    let data = json!({
        "venue": venue,
        "station": station,
        "severity": sos.severity.as_str(),
        "location": (!sos.location.is_empty()).then_some(&sos.location),
        "note": (!sos.note.is_empty()).then_some(&sos.note),
        "sos_id": sos.id,
        "raised_at": when(sos.raised_at, &timezone),
    });
    for user in recipients {
        subjects::to_subject(
            tx,
            Subject::Member(user),
            Topic::Sos,
            Kind::Sos,
            &format!("sos:{}", sos.id),
            data.clone(),
        )
        .await?;
    }
    Ok(())
}

/// Queues the alert of an eject that has come to wait for staff to the venue's owners and managers, on the channels
/// each chose for equipment alerts (email and push by default). Once per eject and channel
/// (`eject:<id>:unanswered`).
pub async fn eject_unanswered(
    tx: &mut TenantTx,
    eject: &crate::rentals::UnansweredEject,
    cabinet: &str,
) -> Result<()> {
    let recipients = venue_managers(tx, eject.venue_id).await?;
    let (venue, timezone) = venue_name(tx, eject.venue_id).await?;
    let data = json!({
        "venue": venue,
        "cabinet": cabinet,
        "slot": eject.slot,
        "powerbank": eject.asset_label,
        "taken_at": when(eject.taken_at, &timezone),
        "command_id": eject.command_id,
    });
    for user in recipients {
        subjects::to_subject(
            tx,
            Subject::Member(user),
            Topic::Equipment,
            Kind::EjectUnanswered,
            &format!("eject:{}:unanswered", eject.command_id),
            data.clone(),
        )
        .await?;
    }
    Ok(())
}

/// The owners, and the managers of `venue` (those scoped to it and those scoped to no venue), by id.
async fn venue_managers(tx: &mut TenantTx, venue: Uuid) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "select m.user_id from membership m
         where m.tenant_id = $1 and (m.role = 'owner' or (m.role = 'manager' and (
           not exists (select 1 from member_venue mv where mv.tenant_id = m.tenant_id and mv.user_id = m.user_id)
           or exists (select 1 from member_venue mv where mv.tenant_id = m.tenant_id and mv.user_id = m.user_id
                      and mv.venue_id = $2))))
         order by m.user_id",
    )
    .bind(tx.tenant())
    .bind(venue)
    .fetch_all(tx.conn())
    .await?)
}

/// A venue's name and time zone.
async fn venue_name(tx: &mut TenantTx, venue: Uuid) -> Result<(String, String)> {
    Ok(
        sqlx::query_as("select name, timezone from venue where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(venue)
            .fetch_one(tx.conn())
            .await?,
    )
}

/// A wallet that falls below this (minor units of its currency: 5.00) gets a low-balance notice.
pub const LOW_BALANCE_MINOR: i64 = 500;

/// Queues a low-balance notice: `patron`'s wallet in `currency` fell from at least [`LOW_BALANCE_MINOR`] to
/// `balance`. At most one a day per wallet (`low_balance:<patron>:<currency>:<date>`).
pub async fn low_balance(
    tx: &mut TenantTx,
    patron: Uuid,
    currency: &str,
    balance: i64,
) -> Result<()> {
    let Some(name) = patron_name(tx, patron).await? else {
        return Ok(());
    };
    subjects::to_subject(
        tx,
        Subject::Patron(patron),
        Topic::LowBalance,
        Kind::LowBalance,
        &format!(
            "low_balance:{patron}:{currency}:{}",
            Utc::now().date_naive()
        ),
        json!({
            "name": name,
            "balance": money(balance, currency),
            "threshold": money(LOW_BALANCE_MINOR, currency),
        }),
    )
    .await?;
    Ok(())
}

/// Queues a debt notice: a charge to `patron` was booked (partly) as debt. At most one a day per currency
/// (`debt:<patron>:<currency>:<date>`), with what is owed in all.
pub async fn debt(tx: &mut TenantTx, patron: Uuid, currency: &str) -> Result<()> {
    let Some(name) = patron_name(tx, patron).await? else {
        return Ok(());
    };
    let owed = -crate::ledger::balance(
        tx,
        crate::ledger::Owner::Patron(patron),
        crate::ledger::Purpose::Debt,
        currency,
    )
    .await?;
    if owed <= 0 {
        return Ok(());
    }
    subjects::to_subject(
        tx,
        Subject::Patron(patron),
        Topic::LowBalance,
        Kind::Debt,
        &format!("debt:{patron}:{currency}:{}", Utc::now().date_naive()),
        json!({ "name": name, "debt": money(owed, currency) }),
    )
    .await?;
    Ok(())
}

/// Queues a session's warning (`minutes` before its planned end) to its patron, on its session-warning channels
/// (push by default). Once per session and warning.
pub async fn session_warning(
    tx: &mut TenantTx,
    session: &crate::sessions::Session,
    minutes: i64,
) -> Result<()> {
    let Some(name) = patron_name(tx, session.patron_id).await? else {
        return Ok(());
    };
    let (venue, station): (String, String) = sqlx::query_as(
        "select v.name, s.name from station s join venue v on v.tenant_id = s.tenant_id and v.id = s.venue_id
         where s.tenant_id = $1 and s.id = $2",
    )
    .bind(tx.tenant())
    .bind(session.station_id)
    .fetch_one(tx.conn())
    .await?;
    subjects::to_subject(
        tx,
        Subject::Patron(session.patron_id),
        Topic::SessionWarnings,
        Kind::SessionWarning,
        &format!("session:{}:warn:{minutes}", session.id),
        json!({ "name": name, "venue": venue, "station": station, "minutes": minutes }),
    )
    .await?;
    Ok(())
}

/// Queues a kiosk report's delivery (seed 003) in the report's own transaction: an email with the PDF attached to
/// its `sent_to_email`, an SMS with a download link to its `sent_to_phone`, one outbox row per (report, channel,
/// recipient) under `report:<id>`. When the session's patron has chosen channels for reports, only those of the two
/// are used; without a choice every address given gets its message. Written in the patron's language (English for
/// an anonymous kiosk user). Marks the channels pending on the report ([`crate::documents::delivery::queue_report`]).
pub async fn report(tx: &mut TenantTx, report: &crate::documents::reports::Report) -> Result<()> {
    let (patron, locale, title): (Uuid, String, String) = sqlx::query_as(
        "select s.patron_id, p.locale, k.title from report r
           join session s on s.tenant_id = r.tenant_id and s.id = r.session_id
           join patron p on p.tenant_id = s.tenant_id and p.id = s.patron_id
           join report_kind k on k.tenant_id = r.tenant_id and k.id = r.kind_id
          where r.tenant_id = $1 and r.id = $2",
    )
    .bind(tx.tenant())
    .bind(report.id)
    .fetch_one(tx.conn())
    .await?;
    let chosen = subjects::chosen(tx, Subject::Patron(patron), Topic::Reports).await?;
    let wants = |c: Channel| chosen.as_ref().is_none_or(|list| list.contains(&c));
    let email = report
        .sent_to_email
        .as_deref()
        .filter(|_| wants(Channel::Email));
    // Providers take E.164: the number as typed, without its spaces, dashes and brackets.
    let phone = report
        .sent_to_phone
        .as_deref()
        .filter(|_| wants(Channel::Sms))
        .map(|p| {
            p.chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect::<String>()
        });
    let data = json!({ "title": title, "report_id": report.id, "session_id": report.session_id });
    for (channel, recipient) in [
        (Channel::Email, email.map(str::to_owned)),
        (Channel::Sms, phone.clone()),
    ] {
        if let Some(recipient) = recipient {
            enqueue(
                tx,
                NewMessage {
                    event_key: format!("report:{}", report.id),
                    channel,
                    recipient,
                    kind: Kind::Report,
                    locale: Locale::from_stored(&locale),
                    data: data.clone(),
                    secret: None,
                },
            )
            .await?;
        }
    }
    crate::documents::delivery::queue_report(tx, report.id, email, phone.as_deref()).await
}
