//! Sign-up, login, refresh, logout, invitation acceptance, and turning an access token into an [`Actor`].

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::auth::{self, PatronRole, TokenKeys, TokenRole};
use crate::db::{Db, TenantId, TenantTx};
use crate::error::{Error, Result, TenantChoice};
use crate::model::{Actor, PatronActor, Principal, Role};
use crate::notify::{self, Locale};
use crate::throttle::{Attempt, AuthLimits, Throttle};
use crate::validate;

/// What every successful sign-up, login, refresh and invitation acceptance returns.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// A JWT for `Authorization: Bearer`, valid for `expires_in` seconds.
    pub access_token: String,
    /// An opaque token for `/api/v1/auth/refresh`; it can be used once.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    pub expires_in: i64,
    pub tenant_id: Uuid,
}

/// What a sign-up did. Both answer the caller the same way: only the owner of an existing email may learn that it
/// exists (it is not told yet). No tokens are issued: the owner signs in with the password.
#[derive(Debug)]
pub enum SignupOutcome {
    /// A new tenant and its owner.
    Created { tenant: TenantId, user_id: Uuid },
    /// The email already has a login; nothing was created.
    EmailTaken,
}

/// Account flows over the database and the token keys, behind the password-check throttle.
#[derive(Clone)]
pub struct Accounts {
    db: Db,
    keys: TokenKeys,
    throttle: Throttle,
}

impl Accounts {
    pub fn new(db: Db, keys: TokenKeys) -> Self {
        Self::with_limits(db, keys, AuthLimits::default())
    }

    pub fn with_limits(db: Db, keys: TokenKeys, limits: AuthLimits) -> Self {
        Self {
            db,
            keys,
            throttle: Throttle::new(limits),
        }
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// Creates a tenant and its first owner. An email that already has a login creates nothing, and the caller
    /// cannot tell (the same work is done: the password is hashed either way).
    #[tracing::instrument(skip_all)]
    pub async fn signup(
        &self,
        organization: &str,
        email: &str,
        password: &str,
        locale: Locale,
        client: Option<IpAddr>,
        request_id: Option<&str>,
    ) -> Result<SignupOutcome> {
        let organization = validate::line("organization", organization, 1, 200)?;
        let email = auth::normalize_email("email", email)?;
        auth::check_password(password, &email)?;
        // A locked email or address cannot sign up either; the lock is keyed by the email as typed, so this says
        // nothing about whether it exists.
        self.throttle.check(&Attempt::member(&email, client))?;
        let hash = auth::hash_password(&self.throttle, password.to_owned()).await?;

        let tenant = TenantId(Uuid::now_v7());
        let user_id = Uuid::now_v7();
        let mut tx = self.db.begin_tenant(tenant).await?;
        sqlx::query("insert into tenant (id, name) values ($1, $2)")
            .bind(tenant)
            .bind(organization)
            .execute(tx.conn())
            .await?;
        // Unverified until the emailed code comes back: until then the login reaches only this tenant.
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "insert into app_user (id, email, password_hash, locale, unverified_tenant_id)
             values ($1, $2, $3, $4, $5)
             on conflict (email) do nothing returning id",
        )
        .bind(user_id)
        .bind(&email)
        .bind(&hash)
        .bind(locale.as_str())
        .bind(tenant)
        .fetch_optional(tx.conn())
        .await?;
        if inserted.is_none() {
            tx.rollback().await?;
            metrics::counter!("switchyard_signup_email_taken_total").increment(1);
            tracing::info!("sign-up for an email that has a login; nothing created");
            return Ok(SignupOutcome::EmailTaken);
        }
        insert_membership(&mut tx, user_id, Role::Owner).await?;
        notify::flows::verification(&mut tx, user_id, &email, locale).await?;
        audit::record_as(
            &mut tx,
            Some(user_id),
            request_id,
            Entry {
                action: "tenant.signup",
                object_type: "tenant",
                object_id: Some(tenant.0),
                detail: serde_json::json!({ "organization": organization }),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(tenant.id = %tenant, "tenant signed up");
        Ok(SignupOutcome::Created { tenant, user_id })
    }

    /// Checks email and password (through the throttle) and opens a session in one of the user's tenants.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        tenant_id: Option<Uuid>,
        client: Option<IpAddr>,
    ) -> Result<TokenPair> {
        let email = auth::normalize_email("email", email)?;
        let attempt = Attempt::member(&email, client);
        let checking = self.throttle.begin(&attempt)?;
        let system = self.db.system();
        let user = system.user_by_email(&email).await?;
        let (user_id, stored, confined) = match user {
            Some(u) => (Some(u.id), Some(u.password_hash), u.unverified_tenant_id),
            None => (None, None, None),
        };
        if !auth::verify_password(&self.throttle, password.to_owned(), stored.clone()).await? {
            checking.failed();
            return Err(Error::InvalidCredentials);
        }
        checking.succeeded();
        let user_id = user_id.ok_or(Error::InvalidCredentials)?;
        let mut memberships = system.user_memberships(user_id).await?;
        // An unverified login (created by an invitation) reaches only the tenant that invited it.
        if let Some(only) = confined {
            memberships.retain(|m| m.tenant_id.0 == only);
        }
        let chosen = match tenant_id {
            Some(id) => memberships
                .iter()
                .find(|m| m.tenant_id.0 == id)
                .ok_or(Error::InvalidCredentials)?,
            None => match memberships.as_slice() {
                [] => return Err(Error::InvalidCredentials),
                [only] => only,
                several => {
                    return Err(Error::TenantChoiceRequired(
                        several
                            .iter()
                            .map(|m| TenantChoice {
                                id: m.tenant_id.0,
                                name: m.tenant_name.clone(),
                            })
                            .collect(),
                    ))
                }
            },
        };
        let mut tx = self.db.begin_tenant(chosen.tenant_id).await?;
        // The password checked may have been changed (or reset) since: then the change revoked every session, and
        // this one, made after it, would have outlived it. Held until commit, so a change waits for this one.
        if lock_login(&mut tx, user_id).await? != stored {
            return Err(Error::InvalidCredentials);
        }
        let pair = self.issue_pair(&mut tx, user_id, chosen.role, None).await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Spends a refresh token for a new pair. A token presented a second time revokes its whole family: either the
    /// client or a thief holds a copy, and the family cannot tell which.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair> {
        let (mut tx, row) = self.find_refresh_token(refresh_token).await?;
        if row.spent_at.is_some() && row.revoked_at.is_none() {
            revoke_family(&mut tx, row.family_id).await?;
            tx.commit().await?;
            tracing::warn!(family = %row.family_id, "refresh token reused; family revoked");
            return Err(Error::Unauthenticated(
                "this refresh token was already used; every session of this login has been signed out",
            ));
        }
        if row.revoked_at.is_some() || row.spent_at.is_some() {
            return Err(Error::Unauthenticated(
                "this refresh token has been revoked; log in again",
            ));
        }
        if row.expires_at <= Utc::now() {
            return Err(Error::Unauthenticated(
                "this refresh token has expired; log in again",
            ));
        }
        // The absolute lifetime: refreshing slides the token's expiry, never the family's.
        if row.family_expires_at <= Utc::now() {
            return Err(Error::Unauthenticated(
                "this sign-in has reached its longest allowed lifetime; log in again",
            ));
        }
        let role = current_token_role(&mut tx, row.subject, row.patron)
            .await?
            .ok_or(Error::Unauthenticated(
                "this login no longer belongs to the tenant",
            ))?;
        sqlx::query("update refresh_token set spent_at = now() where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(row.id)
            .execute(tx.conn())
            .await?;
        let pair = self
            .issue_pair(
                &mut tx,
                row.subject,
                role,
                Some((row.family_id, row.family_expires_at)),
            )
            .await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Revokes the refresh token's family. Unknown tokens are accepted silently: logging out twice is fine.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, refresh_token: &str) -> Result<()> {
        match self.find_refresh_token(refresh_token).await {
            Ok((mut tx, row)) => {
                revoke_family(&mut tx, row.family_id).await?;
                tx.commit().await
            }
            Err(Error::Unauthenticated(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Accepts an invitation. No password travels for an existing login: it accepts signed in (`signed_in` is the
    /// user of the access token presented). A new email sets its password here and becomes an unverified login that
    /// reaches only this tenant until its email is verified.
    #[tracing::instrument(skip_all)]
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: Option<&str>,
        signed_in: Option<Uuid>,
        request_id: Option<&str>,
    ) -> Result<TokenPair> {
        let hash = auth::token_hash(token);
        let tenant = self
            .db
            .system()
            .invitation_tenant(&hash)
            .await?
            .ok_or(Error::NotFound("invitation"))?;
        let mut tx = self.db.begin_tenant(tenant).await?;
        let invitation: Option<InvitationRow> = sqlx::query_as(
            "select id, email, role, locale, expires_at, accepted_at, revoked_at from invitation
             where tenant_id = $1 and token_hash = $2 for update",
        )
        .bind(tenant)
        .bind(&hash)
        .fetch_optional(tx.conn())
        .await?;
        let InvitationRow {
            id: invitation_id,
            email,
            role,
            locale,
            expires_at,
            accepted_at,
            revoked_at,
        } = invitation.ok_or(Error::NotFound("invitation"))?;
        let locale = notify::Locale::from_stored(&locale);
        if accepted_at.is_some() {
            return Err(Error::Conflict(
                "this invitation has already been accepted".into(),
            ));
        }
        if revoked_at.is_some() || expires_at <= Utc::now() {
            return Err(Error::Conflict(
                "this invitation has expired or was withdrawn; ask for a new one".into(),
            ));
        }
        let existing: Option<(Uuid, Option<Uuid>)> =
            sqlx::query_as("select id, unverified_tenant_id from app_user where email = $1")
                .bind(&email)
                .fetch_optional(tx.conn())
                .await?;
        let user_id = match (existing, password) {
            (Some((id, confined)), None) => {
                if signed_in != Some(id) {
                    return Err(match signed_in {
                        None => Error::Unauthenticated(
                            "sign in as the invited login and accept with its access token",
                        ),
                        Some(_) => Error::Forbidden(
                            "this invitation was sent to another login's email address",
                        ),
                    });
                }
                if confined.is_some_and(|t| t != tenant.0) {
                    return Err(Error::Forbidden(
                        "this login's email is not verified yet; it can join another tenant once it is",
                    ));
                }
                id
            }
            (Some(_), Some(_)) => {
                return Err(Error::validation(
                    "password",
                    "this invitation is for an existing login: sign in with it and accept without a password",
                ))
            }
            (None, None) => {
                return Err(Error::validation(
                    "password",
                    "choose a password for the new login",
                ))
            }
            (None, Some(password)) => {
                auth::check_password(password, &email)?;
                let hash = auth::hash_password(&self.throttle, password.to_owned()).await?;
                let id = Uuid::now_v7();
                sqlx::query(
                    "insert into app_user (id, email, password_hash, unverified_tenant_id, locale)
                     values ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(&email)
                .bind(&hash)
                .bind(tenant)
                .bind(locale.as_str())
                .execute(tx.conn())
                .await?;
                notify::flows::verification(&mut tx, id, &email, locale).await?;
                id
            }
        };
        if current_role(&mut tx, user_id).await?.is_some() {
            return Err(Error::Conflict(
                "this login is already a member of the tenant".into(),
            ));
        }
        insert_membership(&mut tx, user_id, role).await?;
        crate::members::apply_invited_scope(&mut tx, invitation_id, user_id).await?;
        sqlx::query("update invitation set accepted_at = now() where tenant_id = $1 and id = $2")
            .bind(tenant)
            .bind(invitation_id)
            .execute(tx.conn())
            .await?;
        audit::record_as(
            &mut tx,
            Some(user_id),
            request_id,
            Entry {
                action: "member.accept_invitation",
                object_type: "member",
                object_id: Some(user_id),
                detail: serde_json::json!({ "invitation_id": invitation_id, "role": role }),
            },
        )
        .await?;
        // As a sign-in does: a password change, reset or sign-out-everywhere under way finishes first, or waits for
        // this and revokes its token too.
        lock_login(&mut tx, user_id).await?;
        let pair = self.issue_pair(&mut tx, user_id, role, None).await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Verifies a login's email with the code it was sent: the login is no longer confined to the tenant it was
    /// created in. A wrong, used or expired code answers `validation_failed` (the same for all three).
    #[tracing::instrument(skip_all)]
    pub async fn verify_email(&self, token: &str) -> Result<()> {
        let token = validate::text("token", token, 1, 200)?;
        match self
            .db
            .system()
            .verify_email(&auth::token_hash(token))
            .await?
        {
            Some(_) => Ok(()),
            None => Err(Error::validation(
                "token",
                "this code is not valid, was used already or has expired; ask for a new one",
            )),
        }
    }

    /// Sends a password-reset code to `email` if it has a login. The caller learns nothing: the answer is the same
    /// whether or not the email exists, and takes as long — one lookup of the email either way; the code is issued
    /// and queued after the answer, in a task of its own (see [`send_password_reset`]).
    #[tracing::instrument(skip_all)]
    pub async fn request_password_reset(&self, email: &str, client: Option<IpAddr>) -> Result<()> {
        let email = auth::normalize_email("email", email)?;
        // Keyed like a sign-in, so one address cannot be flooded with resets through this route either.
        self.throttle.check(&Attempt::member(&email, client))?;
        let Some(user) = self.db.system().user_by_email(&email).await? else {
            tracing::info!("password reset asked for an email without a login; nothing sent");
            return Ok(());
        };
        let db = self.db.clone();
        // A span of its own (following the request's): the request's span, and the request duration traces show,
        // end with the answer, whether or not a code is being issued.
        let span = tracing::info_span!(parent: None, "password_reset");
        span.follows_from(tracing::Span::current());
        tokio::spawn(
            async move {
                if let Err(e) = send_password_reset(&db, user.id, &email).await {
                    tracing::error!(error = %e, "could not issue a password reset code; the user may ask again");
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Completes a password reset: the code works once, within 30 minutes; the new password must pass the usual
    /// checks; every refresh-token family of the login, in every tenant, is revoked in the same transaction; and
    /// the email counts as verified (the code came through it).
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(&self, token: &str, password: &str) -> Result<()> {
        let token = validate::text("token", token, 1, 200)?;
        let invalid = || {
            Error::validation(
                "token",
                "this reset code is not valid, was used already or has expired; ask for a new one",
            )
        };
        let hash = auth::token_hash(token);
        let system = self.db.system();
        let (_, email) = system
            .password_reset_user(&hash)
            .await?
            .ok_or_else(invalid)?;
        auth::check_password(password, &email)?;
        let password_hash = auth::hash_password(&self.throttle, password.to_owned()).await?;
        let (user, families) = system
            .complete_password_reset(&hash, &password_hash)
            .await?
            .ok_or_else(invalid)?;
        tracing::info!(user = %user, revoked = families, "password reset");
        Ok(())
    }

    /// Signs a login out of every device and tenant: its refresh tokens stop working at once, its access tokens
    /// within their lifetime (at most 15 minutes).
    #[tracing::instrument(skip_all)]
    pub async fn sign_out_everywhere(&self, user_id: Uuid) -> Result<i64> {
        let revoked = self.db.system().revoke_refresh_tokens(user_id).await?;
        tracing::info!(user = %user_id, revoked, "signed out everywhere");
        Ok(revoked)
    }

    /// Changes a member's password: the current one must be right (checked through the throttle). Every session of
    /// the login ends (its refresh tokens are revoked: someone who knew the old password may hold one), and reset
    /// codes sent before are void.
    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        user_id: Uuid,
        current: &str,
        new: &str,
        client: Option<IpAddr>,
    ) -> Result<()> {
        let system = self.db.system();
        let user = system
            .user_by_id(user_id)
            .await?
            .ok_or(Error::Unauthenticated("this login no longer exists"))?;
        let attempt = Attempt::member(&user.email, client);
        let checking = self.throttle.begin(&attempt)?;
        if !auth::verify_password(&self.throttle, current.to_owned(), Some(user.password_hash))
            .await?
        {
            checking.failed();
            return Err(Error::validation(
                "currentPassword",
                "the current password is not right",
            ));
        }
        checking.succeeded();
        auth::check_password(new, &user.email).map_err(|e| match e {
            Error::Validation { message, .. } => Error::Validation {
                field: "newPassword",
                message,
            },
            other => other,
        })?;
        let hash = auth::hash_password(&self.throttle, new.to_owned()).await?;
        let revoked = system.change_password(user_id, &hash).await?;
        tracing::info!(user = %user_id, revoked, "password changed");
        Ok(())
    }

    /// Turns a bearer token into the acting member. The role comes from the database, not the token, so a removed
    /// member or a changed role takes effect at once.
    pub async fn authenticate(
        &self,
        bearer: &str,
        request_id: Option<String>,
    ) -> Result<Principal> {
        Ok(self.authenticate_until(bearer, request_id).await?.0)
    }

    /// As [`Accounts::authenticate`], with the token's expiry (Unix seconds): a long-lived connection (a
    /// subscription) ends there unless the client authenticates again.
    pub async fn authenticate_until(
        &self,
        bearer: &str,
        request_id: Option<String>,
    ) -> Result<(Principal, i64)> {
        let claims = self.keys.verify(bearer)?;
        let tenant = TenantId(claims.tenant);
        let patron = matches!(claims.role, TokenRole::Patron(_));
        let gone = || Error::Unauthenticated("this login no longer belongs to the tenant");
        let (role, venues) = self
            .db
            .system()
            .token_principal(tenant, claims.sub, patron)
            .await?
            .ok_or_else(gone)?;
        let principal = match (patron, role) {
            (false, Some(role)) => Principal::Member(Actor {
                tenant,
                user_id: claims.sub,
                role,
                request_id,
                venues,
                client: Default::default(),
            }),
            (false, None) => return Err(gone()),
            (true, _) => Principal::Patron(PatronActor {
                tenant,
                patron_id: claims.sub,
                request_id,
                client: Default::default(),
            }),
        };
        Ok((principal, claims.exp))
    }

    /// A patron signs up with the operator `tenant_id` (from the operator's app or QR code); asks the throttle first,
    /// as a member's sign-up does, so a locked login or address cannot probe which emails have an account there.
    #[tracing::instrument(skip_all)]
    pub async fn patron_signup(
        &self,
        tenant_id: Uuid,
        display_name: &str,
        email: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<TokenPair> {
        let display_name = validate::text("display_name", display_name, 1, 100)?;
        let email = auth::normalize_email("email", email)?;
        self.throttle
            .check(&Attempt::patron(tenant_id, &email, client))?;
        auth::check_password(password, &email)?;
        let hash = auth::hash_password(&self.throttle, password.to_owned()).await?;
        let mut tx = self.db.begin_tenant(TenantId(tenant_id)).await?;
        let exists: bool = sqlx::query_scalar("select exists (select 1 from tenant where id = $1)")
            .bind(tenant_id)
            .fetch_one(tx.conn())
            .await?;
        if !exists {
            return Err(Error::NotFound("operator"));
        }
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into patron (tenant_id, id, display_name, email, password_hash) values ($1, $2, $3, $4, $5)",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(display_name)
        .bind(&email)
        .bind(&hash)
        .execute(tx.conn())
        .await?;
        audit::record_as(
            &mut tx,
            None,
            None,
            Entry {
                action: "patron.signup",
                object_type: "patron",
                object_id: Some(id),
                detail: serde_json::json!({}),
            },
        )
        .await?;
        let pair = self
            .issue_pair(&mut tx, id, PatronRole::Patron, None)
            .await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Changes a patron's password; the current one must be right (checked through the sign-in throttle). Every
    /// session of the patron ends (its refresh tokens are revoked). Returns how many were.
    #[tracing::instrument(skip_all)]
    pub async fn patron_change_password(
        &self,
        patron: &PatronActor,
        current: &str,
        new: &str,
    ) -> Result<i64> {
        let mut tx = self.db.begin_tenant(patron.tenant).await?;
        // Locked first, as a sign-in and a refresh of this patron take it (shared): neither can slip a session in.
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "select email, password_hash from patron where tenant_id = $1 and id = $2 for no key update",
        )
        .bind(patron.tenant.0)
        .bind(patron.patron_id)
        .fetch_optional(tx.conn())
        .await?;
        let Some((Some(email), stored @ Some(_))) = row else {
            return Err(Error::Unauthenticated(
                "this patron has no login; sign up first",
            ));
        };
        let attempt = Attempt::patron(patron.tenant.0, &email, patron.client.ip);
        let checking = self.throttle.begin(&attempt)?;
        if !auth::verify_password(&self.throttle, current.to_owned(), stored).await? {
            checking.failed();
            return Err(Error::validation(
                "currentPassword",
                "the current password is not right",
            ));
        }
        checking.succeeded();
        auth::check_password(new, &email).map_err(|e| match e {
            Error::Validation { message, .. } => Error::Validation {
                field: "newPassword",
                message,
            },
            other => other,
        })?;
        let hash = auth::hash_password(&self.throttle, new.to_owned()).await?;
        sqlx::query("update patron set password_hash = $3 where tenant_id = $1 and id = $2")
            .bind(patron.tenant.0)
            .bind(patron.patron_id)
            .bind(&hash)
            .execute(tx.conn())
            .await?;
        let revoked = revoke_patron_tokens(&mut tx, patron.patron_id).await?;
        audit::record_as(
            &mut tx,
            None,
            None,
            Entry {
                action: "patron.password_changed",
                object_type: "patron",
                object_id: Some(patron.patron_id),
                detail: serde_json::json!({ "sessions_ended": revoked }),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(patron = %patron.patron_id, revoked, "patron password changed");
        Ok(revoked)
    }

    /// Signs a patron out on every device: every refresh token stops working at once (access tokens within their
    /// lifetime). Returns how many were revoked.
    #[tracing::instrument(skip_all)]
    pub async fn patron_sign_out_everywhere(&self, patron: &PatronActor) -> Result<i64> {
        let mut tx = self.db.begin_tenant(patron.tenant).await?;
        sqlx::query("select 1 from patron where tenant_id = $1 and id = $2 for no key update")
            .bind(patron.tenant.0)
            .bind(patron.patron_id)
            .execute(tx.conn())
            .await?;
        let revoked = revoke_patron_tokens(&mut tx, patron.patron_id).await?;
        tx.commit().await?;
        tracing::info!(patron = %patron.patron_id, revoked, "patron signed out everywhere");
        Ok(revoked)
    }

    /// A patron logs in to its account at operator `tenant_id` (through the throttle).
    #[tracing::instrument(skip_all)]
    pub async fn patron_login(
        &self,
        tenant_id: Uuid,
        email: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<TokenPair> {
        let email = auth::normalize_email("email", email)?;
        let attempt = Attempt::patron(tenant_id, &email, client);
        let checking = self.throttle.begin(&attempt)?;
        let mut tx = self.db.begin_tenant(TenantId(tenant_id)).await?;
        // Shared until commit: a password change or sign-out-everywhere of this patron under way finishes first
        // (and this reads the new password), or waits for this sign-in and then revokes its token too.
        let row: Option<(Uuid, Option<String>)> = sqlx::query_as(
            "select id, password_hash from patron where tenant_id = $1 and email = $2 for share",
        )
        .bind(tenant_id)
        .bind(&email)
        .fetch_optional(tx.conn())
        .await?;
        let (id, stored) = match row {
            Some((id, hash)) => (Some(id), hash),
            None => (None, None),
        };
        // Verified even when there is no such login, so the answer takes the same time.
        if !auth::verify_password(&self.throttle, password.to_owned(), stored).await? {
            checking.failed();
            return Err(Error::InvalidCredentials);
        }
        checking.succeeded();
        let id = id.ok_or(Error::InvalidCredentials)?;
        let pair = self
            .issue_pair(&mut tx, id, PatronRole::Patron, None)
            .await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// The refresh token's row, locked, in a transaction of its tenant. A member's login row is locked (shared)
    /// first, in the order a password change, reset or sign-out-everywhere locks them: one of those under way
    /// finishes first (and this token is revoked), or waits for this transaction and then revokes the token it
    /// issues too.
    async fn find_refresh_token(&self, token: &str) -> Result<(TenantTx, RefreshRow)> {
        let invalid = Error::Unauthenticated("the refresh token is not valid; log in again");
        let hash = auth::token_hash(token);
        let Some(tenant) = self.db.system().refresh_token_tenant(&hash).await? else {
            return Err(invalid);
        };
        let mut tx = self.db.begin_tenant(tenant).await?;
        let subject: Option<(Option<Uuid>, Option<Uuid>)> = sqlx::query_as(
            "select user_id, patron_id from refresh_token where tenant_id = $1 and token_hash = $2",
        )
        .bind(tenant)
        .bind(&hash)
        .fetch_optional(tx.conn())
        .await?;
        match subject {
            Some((Some(user), _)) => {
                lock_login(&mut tx, user).await?;
            }
            Some((None, Some(patron))) => {
                sqlx::query("select 1 from patron where tenant_id = $1 and id = $2 for share")
                    .bind(tenant)
                    .bind(patron)
                    .execute(tx.conn())
                    .await?;
            }
            _ => {}
        }
        let row: Option<RefreshRow> = sqlx::query_as(
            "select id, coalesce(user_id, patron_id) as subject, patron_id is not null as patron, family_id,
               expires_at, family_expires_at, spent_at, revoked_at
             from refresh_token where tenant_id = $1 and token_hash = $2 for update",
        )
        .bind(tenant)
        .bind(&hash)
        .fetch_optional(tx.conn())
        .await?;
        Ok((tx, row.ok_or(invalid)?))
    }

    async fn issue_pair(
        &self,
        tx: &mut TenantTx,
        subject: Uuid,
        role: impl Into<TokenRole>,
        family: Option<(Uuid, DateTime<Utc>)>,
    ) -> Result<TokenPair> {
        let role = role.into();
        let (user_id, patron_id) = match role {
            TokenRole::Member(_) => (Some(subject), None),
            TokenRole::Patron(_) => (None, Some(subject)),
        };
        let refresh_token = auth::random_token();
        // A new family gets its absolute deadline; a refreshed token inherits it, and never outlives it.
        let (family_id, family_expires_at) = match family {
            Some(family) => family,
            None => (
                Uuid::now_v7(),
                Utc::now() + chrono::Duration::seconds(self.keys.refresh_family_ttl_secs),
            ),
        };
        sqlx::query(
            "insert into refresh_token
               (tenant_id, id, user_id, patron_id, family_id, token_hash, expires_at, family_expires_at)
             values ($1, $2, $3, $4, $5, $6, least(now() + make_interval(secs => $7), $8), $8)",
        )
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(patron_id)
        .bind(family_id)
        .bind(auth::token_hash(&refresh_token))
        .bind(self.keys.refresh_ttl_secs as f64)
        .bind(family_expires_at)
        .execute(tx.conn())
        .await?;
        Ok(TokenPair {
            access_token: self.keys.issue(subject, tx.tenant().0, role)?,
            refresh_token,
            token_type: "Bearer",
            expires_in: self.keys.access_ttl_secs,
            tenant_id: tx.tenant().0,
        })
    }
}

#[derive(sqlx::FromRow)]
struct InvitationRow {
    id: Uuid,
    email: String,
    role: Role,
    locale: String,
    expires_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    id: Uuid,
    subject: Uuid,
    patron: bool,
    family_id: Uuid,
    expires_at: DateTime<Utc>,
    family_expires_at: DateTime<Utc>,
    spent_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Revokes a refresh-token family. A refresh of the family under way (its token locked) may commit a new token
/// while this waits for that lock; the statement's snapshot, taken before, does not see it. So it runs again, with a
/// snapshot taken after, until it finds nothing left to revoke.
async fn revoke_family(tx: &mut TenantTx, family: Uuid) -> Result<()> {
    for _ in 0..10 {
        let revoked = sqlx::query(
            "update refresh_token set revoked_at = now()
             where tenant_id = $1 and family_id = $2 and revoked_at is null",
        )
        .bind(tx.tenant())
        .bind(family)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if revoked == 0 {
            break;
        }
    }
    Ok(())
}

async fn insert_membership(tx: &mut TenantTx, user_id: Uuid, role: Role) -> Result<()> {
    sqlx::query("insert into membership (tenant_id, user_id, role) values ($1, $2, $3)")
        .bind(tx.tenant())
        .bind(user_id)
        .bind(role)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// What a token's subject is now: a member's current role, or a patron that still has a login.
async fn current_token_role(
    tx: &mut TenantTx,
    subject: Uuid,
    patron: bool,
) -> Result<Option<TokenRole>> {
    if !patron {
        return Ok(current_role(tx, subject).await?.map(TokenRole::Member));
    }
    let exists: bool = sqlx::query_scalar(
        "select exists (select 1 from patron where tenant_id = $1 and id = $2 and password_hash is not null)",
    )
    .bind(tx.tenant())
    .bind(subject)
    .fetch_one(tx.conn())
    .await?;
    Ok(exists.then_some(TokenRole::Patron(PatronRole::Patron)))
}

/// Revokes every refresh token of a patron (its row locked by the caller first). Returns how many.
async fn revoke_patron_tokens(tx: &mut TenantTx, patron: Uuid) -> Result<i64> {
    let revoked = sqlx::query(
        "update refresh_token set revoked_at = now()
         where tenant_id = $1 and patron_id = $2 and revoked_at is null",
    )
    .bind(tx.tenant())
    .bind(patron)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(revoked as i64)
}

/// Locks a member's login row (shared, until the transaction ends) and returns its password hash, `None` for a
/// login that is gone. A password change, a reset and a sign-out-everywhere lock it exclusively before they revoke
/// refresh tokens, so a session issued under this lock is either refused or revoked by them.
async fn lock_login(tx: &mut TenantTx, user_id: Uuid) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("select password_hash from app_user where id = $1 for share")
            .bind(user_id)
            .fetch_optional(tx.conn())
            .await?,
    )
}

/// The user's role in the transaction's tenant, if still a member.
pub async fn current_role(tx: &mut TenantTx, user_id: Uuid) -> Result<Option<Role>> {
    Ok(
        sqlx::query_scalar("select role from membership where tenant_id = $1 and user_id = $2")
            .bind(tx.tenant())
            .bind(user_id)
            .fetch_optional(tx.conn())
            .await?,
    )
}

/// Issues a password-reset code to a login and queues it to `email`, through the outbox of the login's home tenant —
/// the tenant it is confined to while unverified, else the one it joined first — whose name it carries: a stable
/// choice no other tenant can move by renaming itself (see `SystemDb::user_home_tenant`). A login in no tenant has
/// nothing to sign in to, and is sent nothing.
async fn send_password_reset(db: &Db, user: Uuid, email: &str) -> Result<()> {
    let Some(home) = db.system().user_home_tenant(user).await? else {
        tracing::info!("password reset asked for a login in no tenant; nothing sent");
        return Ok(());
    };
    let mut tx = db.begin_tenant(home).await?;
    let locale: String = sqlx::query_scalar("select locale from app_user where id = $1")
        .bind(user)
        .fetch_one(tx.conn())
        .await?;
    notify::flows::password_reset(&mut tx, user, email, Locale::from_stored(&locale)).await?;
    tx.commit().await
}
