//! The people messages go to (members and patrons: "subjects"), the channels each chose per topic, and the push
//! devices their apps registered. [`to_subject`] fans one event out to a subject's chosen channels.

use serde_json::Value;
use uuid::Uuid;

use super::{enqueue, Channel, Kind, Locale, NewMessage};
use crate::db::TenantTx;
use crate::error::{Error, Result};

/// Who a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Member(Uuid),
    Patron(Uuid),
}

impl Subject {
    pub fn id(self) -> Uuid {
        match self {
            Subject::Member(id) | Subject::Patron(id) => id,
        }
    }
}

/// What a message is about, as people choose channels for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Receipts,
    LowBalance,
    SessionWarnings,
    Sos,
    Reports,
    /// The daily summary of each venue, for owners; nobody gets it until they choose a channel (opt-in).
    DailySummary,
    /// The venue's equipment needs someone (an eject nobody answered), for owners and managers.
    Equipment,
}

impl Topic {
    pub const ALL: [Topic; 7] = [
        Topic::Receipts,
        Topic::LowBalance,
        Topic::SessionWarnings,
        Topic::Sos,
        Topic::Reports,
        Topic::DailySummary,
        Topic::Equipment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Receipts => "receipts",
            Topic::LowBalance => "low_balance",
            Topic::SessionWarnings => "session_warnings",
            Topic::Sos => "sos",
            Topic::Reports => "reports",
            Topic::DailySummary => "daily_summary",
            Topic::Equipment => "equipment",
        }
    }

    /// The channels used when the subject chose none.
    pub fn defaults(self) -> &'static [Channel] {
        match self {
            Topic::Receipts | Topic::LowBalance | Topic::Reports => &[Channel::Email],
            Topic::SessionWarnings => &[Channel::Push],
            Topic::Sos => &[Channel::Email, Channel::Sms, Channel::Push],
            Topic::DailySummary => &[],
            Topic::Equipment => &[Channel::Email, Channel::Push],
        }
    }
}

/// The channels `subject` wants for `topic`.
pub async fn channels(tx: &mut TenantTx, subject: Subject, topic: Topic) -> Result<Vec<Channel>> {
    Ok(chosen(tx, subject, topic)
        .await?
        .unwrap_or_else(|| topic.defaults().to_vec()))
}

/// The channels `subject` chose for `topic`, or `None` when it never chose (the defaults apply then).
pub async fn chosen(
    tx: &mut TenantTx,
    subject: Subject,
    topic: Topic,
) -> Result<Option<Vec<Channel>>> {
    let chosen: Option<Vec<String>> = sqlx::query_scalar(
        "select channels from notification_preference where tenant_id = $1 and subject_id = $2 and topic = $3",
    )
    .bind(tx.tenant())
    .bind(subject.id())
    .bind(topic.as_str())
    .fetch_optional(tx.conn())
    .await?;
    Ok(chosen.as_deref().map(parse_channels))
}

/// The channels of a stored choice (names this version no longer knows are skipped).
fn parse_channels(list: &[String]) -> Vec<Channel> {
    list.iter().filter_map(|c| Channel::parse(c)).collect()
}

/// Every topic with the channels `subject` gets it by.
pub async fn all_channels(
    tx: &mut TenantTx,
    subject: Subject,
) -> Result<Vec<(Topic, Vec<Channel>)>> {
    let mut out = Vec::with_capacity(Topic::ALL.len());
    for topic in Topic::ALL {
        out.push((topic, channels(tx, subject, topic).await?));
    }
    Ok(out)
}

/// Sets the channels `subject` wants for `topic` (an empty list: none).
pub async fn set_channels(
    tx: &mut TenantTx,
    subject: Subject,
    topic: Topic,
    channels: &[Channel],
) -> Result<()> {
    let mut list: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
    list.sort_unstable();
    list.dedup();
    sqlx::query(
        "insert into notification_preference (tenant_id, subject_id, topic, channels) values ($1, $2, $3, $4)
         on conflict (tenant_id, subject_id, topic) do update set channels = excluded.channels",
    )
    .bind(tx.tenant())
    .bind(subject.id())
    .bind(topic.as_str())
    .bind(&list)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A push platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Fcm,
    Apns,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Fcm => "fcm",
            Platform::Apns => "apns",
        }
    }
}

/// A registered device, as its owner sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Device {
    pub id: Uuid,
    pub platform: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Registers `subject`'s device token (registering a known token again moves it to this subject).
pub async fn register_device(
    tx: &mut TenantTx,
    subject: Subject,
    platform: Platform,
    token: &str,
) -> Result<Device> {
    let token = token.trim();
    if token.len() < 8
        // A message's recipient is the platform's prefix and the token, at most 320 characters.
        || token.len() > 300
        || !token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
    {
        return Err(Error::validation(
            "token",
            "a push token is 8 to 300 letters, digits and - _ : . as the platform gave it",
        ));
    }
    Ok(sqlx::query_as(
        "insert into push_device (tenant_id, id, subject_id, platform, token) values ($1, $2, $3, $4, $5)
         on conflict (tenant_id, platform, token) do update set subject_id = excluded.subject_id
         returning id, platform, created_at",
    )
    .bind(tx.tenant())
    .bind(Uuid::now_v7())
    .bind(subject.id())
    .bind(platform.as_str())
    .bind(token)
    .fetch_one(tx.conn())
    .await?)
}

/// Removes one of `subject`'s devices; another subject's (or tenant's) id answers `not_found`.
pub async fn remove_device(tx: &mut TenantTx, subject: Subject, id: Uuid) -> Result<()> {
    let done =
        sqlx::query("delete from push_device where tenant_id = $1 and id = $2 and subject_id = $3")
            .bind(tx.tenant())
            .bind(id)
            .bind(subject.id())
            .execute(tx.conn())
            .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("device"));
    }
    Ok(())
}

/// `subject`'s devices.
pub async fn devices(tx: &mut TenantTx, subject: Subject) -> Result<Vec<Device>> {
    Ok(sqlx::query_as(
        "select id, platform, created_at from push_device where tenant_id = $1 and subject_id = $2
         order by created_at limit 100",
    )
    .bind(tx.tenant())
    .bind(subject.id())
    .fetch_all(tx.conn())
    .await?)
}

/// Sets a member's phone number for SMS (`+` and 7 to 15 digits; `None` removes it).
pub async fn set_member_phone(tx: &mut TenantTx, user: Uuid, phone: Option<&str>) -> Result<()> {
    let phone = match phone.map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => {
            let digits = p.strip_prefix('+').unwrap_or("");
            if !(7..=15).contains(&digits.len())
                || !digits.chars().all(|c| c.is_ascii_digit())
                || digits.starts_with('0')
            {
                return Err(Error::validation(
                    "phone",
                    "an international number like +4915123456789",
                ));
            }
            Some(p)
        }
    };
    sqlx::query("update app_user set phone = $2 where id = $1")
        .bind(user)
        .bind(phone)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Where a subject can be reached, and in which language.
struct Addresses {
    email: Option<String>,
    phone: Option<String>,
    locale: Locale,
    /// `platform:token` of each registered device (at most 20, oldest first).
    devices: Vec<String>,
    /// The channels the subject chose for the topic asked about, `None` when it never chose.
    chosen: Option<Vec<String>>,
}

/// How to reach `subject`, and the channels it chose for `topic`, in one read; `None` when the subject is gone.
async fn addresses(tx: &mut TenantTx, subject: Subject, topic: Topic) -> Result<Option<Addresses>> {
    // The subject's own row, by kind; its devices and its choice for the topic ride along as sub-selects.
    let own = match subject {
        Subject::Member(_) => {
            "select u.email, u.phone, u.locale from app_user u
             join membership m on m.user_id = u.id and m.tenant_id = $1 where u.id = $2"
        }
        Subject::Patron(_) => {
            "select email, phone, locale from patron where tenant_id = $1 and id = $2"
        }
    };
    let sql = format!(
        "select o.email, o.phone, o.locale,
           array(select d.platform || ':' || d.token from push_device d
                 where d.tenant_id = $1 and d.subject_id = $2 order by d.created_at limit 20),
           (select p.channels from notification_preference p
            where p.tenant_id = $1 and p.subject_id = $2 and p.topic = $3)
         from ({own}) o"
    );
    type Row = (
        Option<String>,
        Option<String>,
        String,
        Vec<String>,
        Option<Vec<String>>,
    );
    let row: Option<Row> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(subject.id())
        .bind(topic.as_str())
        .fetch_optional(tx.conn())
        .await?;
    Ok(
        row.map(|(email, phone, locale, devices, chosen)| Addresses {
            email,
            phone,
            locale: Locale::from_stored(&locale),
            devices,
            chosen,
        }),
    )
}

/// Queues the message of event `event_key` to `subject` on every channel it chose for `topic` that it can be
/// reached by (an email address, a phone number, registered devices). Returns how many messages were queued.
pub async fn to_subject(
    tx: &mut TenantTx,
    subject: Subject,
    topic: Topic,
    kind: Kind,
    event_key: &str,
    data: Value,
) -> Result<usize> {
    let Some(to) = addresses(tx, subject, topic).await? else {
        return Ok(0);
    };
    let channels = to
        .chosen
        .as_deref()
        .map_or_else(|| topic.defaults().to_vec(), parse_channels);
    let mut recipients: Vec<(Channel, String)> = Vec::new();
    for channel in channels {
        match channel {
            Channel::Email => recipients.extend(to.email.clone().map(|e| (channel, e))),
            Channel::Sms => recipients.extend(to.phone.clone().map(|p| (channel, p))),
            Channel::Push => recipients.extend(to.devices.iter().map(|d| (channel, d.clone()))),
        }
    }
    let mut queued = 0;
    for (channel, recipient) in recipients {
        let new = enqueue(
            tx,
            NewMessage {
                event_key: event_key.to_owned(),
                channel,
                recipient,
                kind,
                locale: to.locale,
                data: data.clone(),
                secret: None,
            },
        )
        .await?;
        queued += usize::from(new);
    }
    Ok(queued)
}
