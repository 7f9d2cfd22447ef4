//! The notification outbox as owners and managers see it; a member's password and phone; everyone's language,
//! channels per topic and push devices.

use async_graphql::{ComplexObject, Context, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::accounts::Accounts;
use switchyard_core::notify::subjects::{self, Platform, Subject, Topic};
use switchyard_core::notify::{self, Channel, Locale};
use switchyard_core::{ErrorCode, PatronActor};
use uuid::Uuid;

use crate::{actor, begin, begin_patron, coded, rows, GqlResult, ManagerGuard};

/// One message in the outbox: the core's row type, shown as it is (one shape, one place).
pub use switchyard_core::notify::Notification;

/// A page of messages, newest first.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct NotificationPage {
    pub items: Vec<Notification>,
    #[graphql(skip)]
    more: bool,
}

#[ComplexObject]
impl NotificationPage {
    /// Pass as `after` for the next page; `null` on the last page.
    async fn end_cursor(&self) -> Option<Uuid> {
        if self.more {
            self.items.last().map(|n| n.id)
        } else {
            None
        }
    }

    async fn has_more(&self) -> bool {
        self.more
    }
}

/// Owners and managers who see every venue (a message may concern any venue, as audit entries do).
fn check_reader(actor: &switchyard_core::Actor) -> async_graphql::Result<()> {
    actor.require_manager().gql()?;
    if actor.venues.is_some() {
        return Err(coded(
            ErrorCode::Forbidden,
            "the message log is for owners and managers of every venue",
        ));
    }
    Ok(())
}

#[derive(Default)]
pub struct NotificationQuery;

#[Object]
impl NotificationQuery {
    /// The tenant's messages and their delivery status, newest first: `first` (default 50, at most 500) after the
    /// cursor `after` (the `endCursor` of the page before; another tenant's id answers `not_found`), optionally of
    /// one `status` (`pending`, `sent`, `dead`).
    #[graphql(
        guard = "ManagerGuard",
        complexity = "rows(first.unwrap_or(50), child_complexity)"
    )]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        status: Option<String>,
        first: Option<i64>,
        after: Option<Uuid>,
    ) -> async_graphql::Result<NotificationPage> {
        let (actor, mut tx) = begin(ctx).await?;
        check_reader(actor)?;
        let first = first.unwrap_or(50);
        if !(1..=500).contains(&first) {
            return Err(switchyard_core::Error::validation(
                "first",
                "between 1 and 500",
            ))
            .gql();
        }
        let mut items = notify::list(&mut tx, status.as_deref(), after, first + 1)
            .await
            .gql()?;
        let more = items.len() as i64 > first;
        items.truncate(first as usize);
        Ok(NotificationPage { items, more })
    }

    /// One message; another tenant's id answers `not_found`.
    #[graphql(guard = "ManagerGuard")]
    async fn notification(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Notification> {
        let (actor, mut tx) = begin(ctx).await?;
        check_reader(actor)?;
        notify::get(&mut tx, id).await.gql()
    }
}

#[derive(Default)]
pub struct NotificationMutation;

#[Object]
impl NotificationMutation {
    /// Changes the signed-in member's or patron's password; the current one must be given. It signs the login out
    /// everywhere, as a reset does: every refresh token stops working at once (this device's too: sign in again with
    /// the new password; access tokens end within their lifetime), and a member's reset codes sent before are void.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        if let Some(patron) = ctx.data_opt::<PatronActor>() {
            ctx.data::<Accounts>()?
                .patron_change_password(patron, &current_password, &new_password)
                .await
                .gql()?;
            return Ok(true);
        }
        let actor = actor(ctx)?;
        ctx.data::<Accounts>()?
            .change_password(
                actor.user_id,
                &current_password,
                &new_password,
                actor.client.ip,
            )
            .await
            .gql()?;
        Ok(true)
    }

    /// Signs the signed-in login (a member's, in every tenant; or a patron's) out on every device: every refresh
    /// token stops working at once (access tokens end within their lifetime). Returns how many were revoked.
    async fn sign_out_everywhere(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        if let Some(patron) = ctx.data_opt::<PatronActor>() {
            return ctx
                .data::<Accounts>()?
                .patron_sign_out_everywhere(patron)
                .await
                .gql();
        }
        let actor = actor(ctx)?;
        ctx.data::<Accounts>()?
            .sign_out_everywhere(actor.user_id)
            .await
            .gql()
    }

    /// The language of the signed-in member's or patron's messages: `en` or `de`.
    async fn set_my_locale(
        &self,
        ctx: &Context<'_>,
        locale: String,
    ) -> async_graphql::Result<String> {
        let locale = Locale::input("locale", Some(&locale)).gql()?;
        let (subject, mut tx) = begin_subject(ctx).await?;
        match subject {
            Subject::Member(user) => notify::set_member_locale(&mut tx, user, locale).await,
            Subject::Patron(patron) => {
                notify::set_patron_preferences(&mut tx, patron, Some(locale)).await
            }
        }
        .gql()?;
        tx.commit().await.gql()?;
        Ok(locale.as_str().to_owned())
    }

    /// The signed-in member's mobile number for SMS (`+4915123456789`); `null` removes it. (A patron's number is
    /// its profile's `phone`.)
    async fn set_my_phone(
        &self,
        ctx: &Context<'_>,
        phone: Option<String>,
    ) -> async_graphql::Result<bool> {
        let (actor, mut tx) = begin(ctx).await?;
        subjects::set_member_phone(&mut tx, actor.user_id, phone.as_deref())
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(true)
    }

    /// The channels the signed-in member or patron wants `topic` by (an empty list: none).
    async fn set_my_notification_channels(
        &self,
        ctx: &Context<'_>,
        topic: NotificationTopic,
        channels: Vec<NotificationChannel>,
    ) -> async_graphql::Result<TopicChannels> {
        let (subject, mut tx) = begin_subject(ctx).await?;
        let list: Vec<Channel> = channels.iter().map(|c| Channel::from(*c)).collect();
        subjects::set_channels(&mut tx, subject, topic.into(), &list)
            .await
            .gql()?;
        let now = subjects::channels(&mut tx, subject, topic.into())
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(TopicChannels {
            topic,
            channels: now.into_iter().map(NotificationChannel::from).collect(),
        })
    }

    /// Registers the signed-in member's or patron's device for push messages (the token its platform gave the
    /// app). Registering a token again moves it to whoever registers it.
    async fn register_push_device(
        &self,
        ctx: &Context<'_>,
        platform: PushPlatform,
        token: String,
    ) -> async_graphql::Result<PushDevice> {
        let (subject, mut tx) = begin_subject(ctx).await?;
        let device = subjects::register_device(&mut tx, subject, platform.into(), &token)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(device.into())
    }

    /// Removes one of the signed-in member's or patron's devices; anyone else's id answers `not_found`.
    async fn remove_push_device(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<bool> {
        let (subject, mut tx) = begin_subject(ctx).await?;
        subjects::remove_device(&mut tx, subject, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(true)
    }
}

#[derive(Default)]
pub struct PreferenceQuery;

#[Object]
impl PreferenceQuery {
    /// The channels the signed-in member or patron gets each topic by.
    async fn my_notification_channels(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<TopicChannels>> {
        let (subject, mut tx) = begin_subject(ctx).await?;
        let all = subjects::all_channels(&mut tx, subject).await.gql()?;
        Ok(all
            .into_iter()
            .map(|(topic, channels)| TopicChannels {
                topic: topic.into(),
                channels: channels
                    .into_iter()
                    .map(NotificationChannel::from)
                    .collect(),
            })
            .collect())
    }

    /// The signed-in member's or patron's push devices.
    async fn my_push_devices(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<PushDevice>> {
        let (subject, mut tx) = begin_subject(ctx).await?;
        Ok(subjects::devices(&mut tx, subject)
            .await
            .gql()?
            .into_iter()
            .map(PushDevice::from)
            .collect())
    }
}

/// The signed-in member or patron, and a transaction in its tenant.
async fn begin_subject(
    ctx: &Context<'_>,
) -> async_graphql::Result<(Subject, switchyard_core::TenantTx)> {
    if ctx.data_opt::<switchyard_core::PatronActor>().is_some() {
        let (patron, tx) = begin_patron(ctx).await?;
        return Ok((Subject::Patron(patron.patron_id), tx));
    }
    let (actor, tx) = begin(ctx).await?;
    Ok((Subject::Member(actor.user_id), tx))
}

/// What a message is about, as people choose channels for it.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
pub enum NotificationTopic {
    Receipts,
    LowBalance,
    SessionWarnings,
    Sos,
    Reports,
    /// Owners: each venue's figures of the day before, once a venue-local day (no channels until chosen).
    DailySummary,
    /// Owners and managers: the venue's equipment needs someone (an eject nobody answered).
    Equipment,
}

impl From<NotificationTopic> for Topic {
    fn from(t: NotificationTopic) -> Self {
        match t {
            NotificationTopic::Receipts => Topic::Receipts,
            NotificationTopic::LowBalance => Topic::LowBalance,
            NotificationTopic::SessionWarnings => Topic::SessionWarnings,
            NotificationTopic::Sos => Topic::Sos,
            NotificationTopic::Reports => Topic::Reports,
            NotificationTopic::DailySummary => Topic::DailySummary,
            NotificationTopic::Equipment => Topic::Equipment,
        }
    }
}

impl From<Topic> for NotificationTopic {
    fn from(t: Topic) -> Self {
        match t {
            Topic::Receipts => NotificationTopic::Receipts,
            Topic::LowBalance => NotificationTopic::LowBalance,
            Topic::SessionWarnings => NotificationTopic::SessionWarnings,
            Topic::Sos => NotificationTopic::Sos,
            Topic::Reports => NotificationTopic::Reports,
            Topic::DailySummary => NotificationTopic::DailySummary,
            Topic::Equipment => NotificationTopic::Equipment,
        }
    }
}

#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
pub enum NotificationChannel {
    Email,
    Sms,
    Push,
}

impl From<NotificationChannel> for Channel {
    fn from(c: NotificationChannel) -> Self {
        match c {
            NotificationChannel::Email => Channel::Email,
            NotificationChannel::Sms => Channel::Sms,
            NotificationChannel::Push => Channel::Push,
        }
    }
}

impl From<Channel> for NotificationChannel {
    fn from(c: Channel) -> Self {
        match c {
            Channel::Email => NotificationChannel::Email,
            Channel::Sms => NotificationChannel::Sms,
            Channel::Push => NotificationChannel::Push,
        }
    }
}

#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
pub enum PushPlatform {
    /// Firebase Cloud Messaging (Android, web).
    Fcm,
    /// Apple Push Notification service (iOS).
    Apns,
}

impl From<PushPlatform> for Platform {
    fn from(p: PushPlatform) -> Self {
        match p {
            PushPlatform::Fcm => Platform::Fcm,
            PushPlatform::Apns => Platform::Apns,
        }
    }
}

#[derive(SimpleObject)]
pub struct TopicChannels {
    pub topic: NotificationTopic,
    pub channels: Vec<NotificationChannel>,
}

/// A registered push device (its token is not shown again).
#[derive(SimpleObject)]
pub struct PushDevice {
    pub id: Uuid,
    /// `fcm` or `apns`.
    pub platform: String,
    pub created_at: DateTime<Utc>,
}

impl From<subjects::Device> for PushDevice {
    fn from(d: subjects::Device) -> Self {
        Self {
            id: d.id,
            platform: d.platform,
            created_at: d.created_at,
        }
    }
}
