//! The notification outbox as owners and managers see it, a member's password and language, and a patron's
//! message preferences.

use async_graphql::{ComplexObject, Context, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::accounts::Accounts;
use switchyard_core::notify::{self, Locale};
use switchyard_core::ErrorCode;
use uuid::Uuid;

use crate::{actor, begin, begin_patron, coded, rows, GqlResult, ManagerGuard};

/// One message in the outbox. Its text and any one-time token it carried are never shown.
#[derive(SimpleObject)]
pub struct Notification {
    pub id: Uuid,
    /// What caused it (`invitation:<id>`, `session:<id>:receipt`, `sos:<id>` …).
    pub event_key: String,
    /// `email` (SMS and push are not delivered yet).
    pub channel: String,
    pub recipient: String,
    /// The template: `invitation`, `verify_email`, `password_reset`, `receipt`, `sos`.
    pub kind: String,
    pub locale: String,
    /// `pending` (waiting or retrying), `sent`, `dead` (given up).
    pub status: String,
    pub attempts: i32,
    /// Why the last attempt failed, in general words (`the mail server answered 550 (refused)`).
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<notify::Notification> for Notification {
    fn from(n: notify::Notification) -> Self {
        Self {
            id: n.id,
            event_key: n.event_key,
            channel: n.channel,
            recipient: n.recipient,
            kind: n.kind,
            locale: n.locale,
            status: n.status,
            attempts: n.attempts,
            last_error: n.last_error,
            next_attempt_at: n.next_attempt_at,
            last_attempt_at: n.last_attempt_at,
            sent_at: n.sent_at,
            created_at: n.created_at,
        }
    }
}

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
    /// cursor `after`, optionally of one `status` (`pending`, `sent`, `dead`).
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
        Ok(NotificationPage {
            items: items.into_iter().map(Notification::from).collect(),
            more,
        })
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
        Ok(notify::get(&mut tx, id).await.gql()?.into())
    }
}

#[derive(Default)]
pub struct NotificationMutation;

#[Object]
impl NotificationMutation {
    /// Changes the signed-in member's password; the current one must be given. Other sessions stay signed in
    /// (a password reset by email signs out everywhere).
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
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

    /// The language of the signed-in member's messages: `en` or `de`.
    async fn set_my_locale(
        &self,
        ctx: &Context<'_>,
        locale: String,
    ) -> async_graphql::Result<String> {
        let locale = Locale::input("locale", Some(&locale)).gql()?;
        let (actor, mut tx) = begin(ctx).await?;
        notify::set_member_locale(&mut tx, actor.user_id, locale)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(locale.as_str().to_owned())
    }

    /// The signed-in patron's message preferences: its language (`en`, `de`) and whether receipts come by email.
    async fn set_my_message_preferences(
        &self,
        ctx: &Context<'_>,
        locale: Option<String>,
        receipts_by_email: Option<bool>,
    ) -> async_graphql::Result<bool> {
        let locale = match locale {
            Some(l) => Some(Locale::input("locale", Some(&l)).gql()?),
            None => None,
        };
        let (patron, mut tx) = begin_patron(ctx).await?;
        notify::set_patron_preferences(&mut tx, patron.patron_id, locale, receipts_by_email)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(true)
    }
}
