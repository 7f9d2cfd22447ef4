//! The one error catalogue shared by REST (`{"error":{"code","message"}}`) and GraphQL (`extensions.code`).

use serde::Serialize;

/// Every error code a client can see. The string form is the wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body is not valid JSON or not the expected shape.
    MalformedRequest,
    /// A field is present but its value is not acceptable; `field` names it.
    ValidationFailed,
    /// No credentials, or credentials that are invalid, expired or revoked.
    Unauthenticated,
    /// Email and password do not match a login.
    InvalidCredentials,
    /// The caller's role does not allow this.
    Forbidden,
    /// The object does not exist for this tenant (also for other tenants' objects).
    NotFound,
    /// The change conflicts with existing data (a duplicate name, the last owner ...).
    Conflict,
    /// Login matched several tenants; choose one with `tenant_id`.
    TenantChoiceRequired,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// The body's content type is not `application/json`.
    UnsupportedMediaType,
    /// The HTTP method is not allowed on this route.
    MethodNotAllowed,
    /// Too many requests from this address, or failed sign-ins for this account; retry later.
    RateLimited,
    /// A webhook's signature is missing, wrong or too old.
    InvalidSignature,
    /// The quote's time to live has passed; ask for a new quote.
    QuoteExpired,
    /// The patron's wallet does not cover what the operation needs.
    InsufficientFunds,
    /// The card was declined (`message` says why, in the card network's words).
    CardDeclined,
    /// The payment provider could not be reached or answered with an error; retry later.
    PaymentProviderUnavailable,
    /// This `Idempotency-Key` was used before with a different request body, or by another member.
    IdempotencyKeyReused,
    /// A state-changing request needs an `Idempotency-Key` header.
    IdempotencyKeyRequired,
    /// The request took longer than the configured timeout.
    Timeout,
    /// Not yet possible (a webhook naming a payment whose record is still being written), or the request ran into
    /// another change made at the same moment and was undone (nothing of it was kept); send it again.
    RetryLater,
    /// The GraphQL document is invalid or exceeds a limit (depth, complexity, aliases, batch size).
    InvalidQuery,
    /// A dependency (the database) is down or overloaded; retry after `Retry-After` seconds. Not a sign-out.
    Unavailable,
    /// Something failed on our side. The details are logged, never returned.
    Internal,
}

impl ErrorCode {
    /// The wire string, as in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed_request",
            Self::ValidationFailed => "validation_failed",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::TenantChoiceRequired => "tenant_choice_required",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RateLimited => "rate_limited",
            Self::QuoteExpired => "quote_expired",
            Self::InvalidSignature => "invalid_signature",
            Self::InsufficientFunds => "insufficient_funds",
            Self::CardDeclined => "card_declined",
            Self::PaymentProviderUnavailable => "payment_provider_unavailable",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyKeyRequired => "idempotency_key_required",
            Self::Timeout => "timeout",
            Self::RetryLater => "retry_later",
            Self::InvalidQuery => "invalid_query",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status REST answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::MalformedRequest
            | Self::InvalidQuery
            | Self::IdempotencyKeyRequired
            | Self::QuoteExpired
            | Self::InvalidSignature => 400,
            Self::InsufficientFunds | Self::CardDeclined => 402,
            Self::PaymentProviderUnavailable => 502,
            Self::Unauthenticated | Self::InvalidCredentials => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Timeout => 408,
            Self::Conflict | Self::TenantChoiceRequired => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::ValidationFailed | Self::IdempotencyKeyReused => 422,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
            Self::RetryLater => 503,
        }
    }

    /// Every code, for documentation and the catalogue test.
    pub const ALL: [ErrorCode; 24] = [
        Self::InvalidSignature,
        Self::QuoteExpired,
        Self::InsufficientFunds,
        Self::CardDeclined,
        Self::PaymentProviderUnavailable,
        Self::IdempotencyKeyReused,
        Self::IdempotencyKeyRequired,
        Self::MalformedRequest,
        Self::ValidationFailed,
        Self::Unauthenticated,
        Self::InvalidCredentials,
        Self::Forbidden,
        Self::NotFound,
        Self::Conflict,
        Self::TenantChoiceRequired,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::MethodNotAllowed,
        Self::RateLimited,
        Self::Timeout,
        Self::RetryLater,
        Self::InvalidQuery,
        Self::Unavailable,
        Self::Internal,
    ];
}

/// A tenant the caller may choose at login.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantChoice {
    pub id: uuid::Uuid,
    pub name: String,
}

/// The domain error. `Display` is always safe to show a client: internal causes are kept in the value for the log
/// line and never formatted into the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("email or password is incorrect")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(&'static str),
    /// `forbidden` with a message that names a limit (e.g. a tenant's cash top-up cap).
    #[error("{0}")]
    ForbiddenOver(String),
    #[error("this login belongs to several tenants; repeat the request with one of their ids as tenant_id")]
    TenantChoiceRequired(Vec<TenantChoice>),
    #[error("Quote expired")]
    QuoteExpired,
    #[error("{0}")]
    InvalidSignature(&'static str),
    #[error("{0}")]
    InsufficientFunds(String),
    #[error("the card was declined ({0})")]
    CardDeclined(String),
    #[error("the payment provider is unavailable; retry later")]
    ProviderUnavailable(#[source] anyhow::Error),
    #[error("this Idempotency-Key was already used with a different request (or by another member); use a new key for a new request")]
    IdempotencyKeyReused,
    #[error("the service is briefly unavailable; retry in a few seconds")]
    Unavailable(#[source] anyhow::Error),
    /// A password check that must wait (failures of the account or address, or too many checks at once).
    #[error("too many sign-in attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    RetryLater(&'static str),
    /// The database undid the transaction because it collided with another (a deadlock, a serialization failure):
    /// nothing of it was kept, and the same request sent again normally goes through.
    #[error("this request ran into another change made at the same moment and was undone; send it again")]
    Collided(#[source] anyhow::Error),
    /// `rate_limited` for a held limit that is not about sign-ins (live subscriptions, say).
    #[error("{0}")]
    TooMany(&'static str),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }

    /// The cause to log (never shown to a client), for errors whose message hides it.
    pub fn hidden_cause(&self) -> Option<&anyhow::Error> {
        match self {
            Self::Internal(cause)
            | Self::ProviderUnavailable(cause)
            | Self::Unavailable(cause)
            | Self::Collided(cause) => Some(cause),
            _ => None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation { .. } => ErrorCode::ValidationFailed,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::InvalidCredentials => ErrorCode::InvalidCredentials,
            Self::Forbidden(_) | Self::ForbiddenOver(_) => ErrorCode::Forbidden,
            Self::TenantChoiceRequired(_) => ErrorCode::TenantChoiceRequired,
            Self::QuoteExpired => ErrorCode::QuoteExpired,
            Self::InvalidSignature(_) => ErrorCode::InvalidSignature,
            Self::InsufficientFunds(_) => ErrorCode::InsufficientFunds,
            Self::CardDeclined(_) => ErrorCode::CardDeclined,
            Self::ProviderUnavailable(_) => ErrorCode::PaymentProviderUnavailable,
            Self::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::RateLimited { .. } | Self::TooMany(_) => ErrorCode::RateLimited,
            Self::RetryLater(_) | Self::Collided(_) => ErrorCode::RetryLater,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Seconds to send as `Retry-After`, for `rate_limited`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The field a validation error names, for `{"error":{"field":..}}` and GraphQL `extensions.field`.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Validation { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // Constraint names are part of the schema's contract: each unique index a user can run into maps to a
        // sentence they can act on.
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                let message = match db.constraint() {
                    Some("venue_name_key") => "a venue with this name already exists",
                    Some("station_name_key") => {
                        "a station with this name already exists at this venue"
                    }
                    Some("app_user_email_key") => "an account with this email already exists",
                    Some("invitation_pending_email_key") => {
                        "this email already has a pending invitation"
                    }
                    Some("connector_number_key") => "this connector number is already used",
                    Some("tariff_name_key") => "a tariff with this name already exists",
                    Some("patron_email_key") => "a patron with this email already exists",
                    Some("rfid_tag_pkey") => "this RFID tag already belongs to a patron",
                    Some("session_station_running_key") => {
                        "this station already has a running session"
                    }
                    Some("asset_label_key") => "an asset with this label already exists",
                    Some("asset_slot_key") => "that slot is already taken; retry",
                    Some("session_quote_key") => "this quote was already used",
                    Some("staff_shift_open_key") => "you are already clocked in; clock out first",
                    Some("venue_checkin_open_key") => {
                        "this patron is already checked in somewhere; check out first"
                    }
                    _ => "this already exists",
                };
                return Self::Conflict(message.to_owned());
            }
            if db.is_foreign_key_violation() {
                return Self::NotFound("referenced object");
            }
            // 22008 datetime field overflow: a date the client gave (a `from` in the year -9999, say) that Postgres
            // cannot hold. The client's input, not our failure.
            if db.code().as_deref() == Some("22008") {
                return Self::validation(
                    "date",
                    "a date or time is out of the range this service can keep; use a year between 1 and 9999",
                );
            }
            // 40P01 deadlock detected, 40001 serialization failure: Postgres rolled the transaction back.
            if matches!(db.code().as_deref(), Some("40P01" | "40001")) {
                return Self::Collided(e.into());
            }
        }
        if is_outage(&e) {
            return Self::Unavailable(e.into());
        }
        Self::Internal(e.into())
    }
}

/// Whether `e` says the database cannot be reached or cannot take more work (so the client should retry, not sign
/// out): no connection from the pool in time, a broken or refused connection, the server shutting down or starting
/// up, too many connections.
pub fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        // A broken wire conversation (a proxy or balancer in front of Postgres closing on us) counts too: the
        // client's request was fine and a retry may well succeed.
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-57P03: admin/crash shutdown, cannot connect now; 53300: too many
            // connections.
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_unique_snake_case_and_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{text}"
            );
            assert!((400..600).contains(&code.http_status()), "{text}");
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(serde_json::json!(text)),
                "wire form of {text}"
            );
        }
    }

    #[test]
    fn a_database_outage_is_unavailable_not_internal() {
        let e = Error::from(sqlx::Error::PoolTimedOut);
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert_eq!(e.code().http_status(), 503);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            Error::from(sqlx::Error::Io(refused)).code(),
            ErrorCode::Unavailable
        );
        assert_eq!(
            Error::from(sqlx::Error::RowNotFound).code(),
            ErrorCode::Internal
        );
    }

    #[test]
    fn internal_errors_never_show_their_cause() {
        let e = Error::Internal(anyhow::anyhow!("relation \"secret_table\" does not exist"));
        assert_eq!(e.to_string(), "internal error");
        assert_eq!(e.code().http_status(), 500);
    }
}
