//! Members and invitations.

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::accounts::Accounts;
use switchyard_core::{members, Actor, Role};
use uuid::Uuid;

use crate::{begin, GqlResult, ManagerGuard};

#[derive(SimpleObject)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    /// The venues the member works in; `null`: every venue (always for owners).
    pub venue_ids: Option<Vec<Uuid>>,
    pub created_at: DateTime<Utc>,
}

impl From<members::Member> for Member {
    fn from(m: members::Member) -> Self {
        Self {
            user_id: m.user_id,
            email: m.email,
            role: m.role,
            venue_ids: m.venue_ids,
            created_at: m.created_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct Invitation {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    /// The venues it grants; `null`: every venue.
    pub venue_ids: Option<Vec<Uuid>>,
    pub expires_at: DateTime<Utc>,
}

/// The invitation and its token. The token is shown only here; send it to the invitee, who passes it to
/// `acceptInvitation`.
#[derive(SimpleObject)]
pub struct InvitationPayload {
    /// The invitation. Its token goes to the invitee's mailbox only, never to the inviter.
    pub invitation: Invitation,
}

/// Tokens for the login that accepted an invitation, as REST's login returns them.
#[derive(SimpleObject)]
pub struct AuthPayload {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub tenant_id: Uuid,
}

#[derive(Default)]
pub struct MemberQuery;

#[Object]
impl MemberQuery {
    /// The tenant's members.
    async fn members(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Member>> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(members::list(&mut tx)
            .await
            .gql()?
            .into_iter()
            .map(Member::from)
            .collect())
    }
}

#[derive(Default)]
pub struct MemberMutation;

#[Object]
impl MemberMutation {
    /// Invites an email with a role (only owners invite owners) and emails the invitation, with its token, to that
    /// address. Valid for 7 days; inviting again replaces it.
    /// `venueIds` confines a staff member or manager to those venues (omitted: every venue the inviter sees).
    #[graphql(guard = "ManagerGuard")]
    async fn invite_member(
        &self,
        ctx: &Context<'_>,
        email: String,
        role: Role,
        venue_ids: Option<Vec<Uuid>>,
        #[graphql(
            desc = "the invitee's language for the invitation and its later messages: `en` (default) or `de`"
        )]
        locale: Option<String>,
    ) -> async_graphql::Result<InvitationPayload> {
        let locale = switchyard_core::notify::Locale::input("locale", locale.as_deref()).gql()?;
        let (actor, mut tx) = begin(ctx).await?;
        let (invitation, _token) =
            members::invite_scoped(&mut tx, actor, &email, role, venue_ids, locale)
                .await
                .gql()?;
        tx.commit().await.gql()?;
        Ok(InvitationPayload {
            invitation: Invitation {
                id: invitation.id,
                email: invitation.email,
                role: invitation.role,
                venue_ids: invitation.venue_ids,
                expires_at: invitation.expires_at,
            },
        })
    }

    /// Accepts an invitation. For an email that already has a login, that login accepts signed in (its access
    /// token, from any of its tenants) and gives no password. A new email gives the password of its new login,
    /// which stays confined to this tenant until its email is verified.
    async fn accept_invitation(
        &self,
        ctx: &Context<'_>,
        token: String,
        password: Option<String>,
    ) -> async_graphql::Result<AuthPayload> {
        let accounts = ctx.data::<Accounts>()?;
        let request_id = ctx.data_opt::<RequestId>().map(|r| r.0.as_str());
        let signed_in = ctx.data_opt::<Actor>().map(|a| a.user_id);
        let pair = accounts
            .accept_invitation(&token, password.as_deref(), signed_in, request_id)
            .await
            .gql()?;
        Ok(AuthPayload {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: pair.token_type.to_owned(),
            expires_in: pair.expires_in,
            tenant_id: pair.tenant_id,
        })
    }

    /// Changes a member's role. Only owners grant or take away `OWNER`; the last owner keeps it.
    #[graphql(guard = "ManagerGuard")]
    async fn change_member_role(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        role: Role,
    ) -> async_graphql::Result<Member> {
        let (actor, mut tx) = begin(ctx).await?;
        let member = members::change_role(&mut tx, actor, user_id, role)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(member.into())
    }

    /// Sets the venues a staff member or manager works in (`null`: every venue). A manager confined to some
    /// venues grants only those, and only to members within them. Takes effect at the member's next request.
    #[graphql(guard = "ManagerGuard")]
    async fn set_member_venues(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
        venue_ids: Option<Vec<Uuid>>,
    ) -> async_graphql::Result<Member> {
        let (actor, mut tx) = begin(ctx).await?;
        let member = members::set_venues(&mut tx, actor, user_id, venue_ids)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(member.into())
    }

    /// Removes a member; their tokens stop working at once. The last owner cannot be removed.
    #[graphql(guard = "ManagerGuard")]
    async fn remove_member(
        &self,
        ctx: &Context<'_>,
        user_id: Uuid,
    ) -> async_graphql::Result<Member> {
        let (actor, mut tx) = begin(ctx).await?;
        let member = members::remove(&mut tx, actor, user_id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(member.into())
    }
}

/// The request id, inserted by the API so unauthenticated mutations can still be traced in the audit log.
#[derive(Clone)]
pub struct RequestId(pub String);
