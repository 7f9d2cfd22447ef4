//! `GET /graphql/ws`: GraphQL subscriptions over WebSocket, speaking `graphql-transport-ws` (and the legacy
//! `graphql-ws` of subscriptions-transport-ws, which older mobile clients use).
//!
//! The client authenticates in `connection_init` (`{"authorization": "Bearer <access token>"}`). A missing or
//! invalid token closes the connection with `4401`; a token that expires while the connection is open closes it
//! with `4403` (the client reconnects with a fresh token and resumes with `after`), and so does the member's
//! removal from the tenant, at once.

use std::sync::{Arc, Mutex};

use async_graphql::http::{
    WebSocket as GraphQLWebSocket, WebSocketProtocols as Protocols, WsMessage,
};
use async_graphql::Data;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use switchyard_core::{ErrorCode, Principal};
use switchyard_graphql::live::ConnectionSlots;

use crate::app::AppState;
use crate::error::ApiError;

/// Close codes of the graphql-transport-ws protocol.
const UNAUTHORIZED: u16 = 4401;
const FORBIDDEN: u16 = 4403;
const INIT_TIMED_OUT: u16 = 4408;

/// How long a new socket may take to send `connection_init`.
const INIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest client message (a subscribe with its query).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Upgrades to a subscription connection; refuses requests that name no GraphQL WebSocket subprotocol.
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let protocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().parse::<Protocols>().ok());
    let Some(protocol) = protocol else {
        return ApiError::new(
            ErrorCode::MalformedRequest,
            "ask for the graphql-transport-ws (or the legacy graphql-ws) subprotocol in Sec-WebSocket-Protocol",
        )
        .into_response();
    };
    upgrade
        .protocols([protocol.sec_websocket_protocol()])
        .max_message_size(MAX_MESSAGE_BYTES.min(state.config.body_limit_bytes))
        .max_frame_size(MAX_MESSAGE_BYTES.min(state.config.body_limit_bytes))
        // Idle connections are the common case: small buffers keep each cheap (they grow for a larger message).
        .read_buffer_size(2 * 1024)
        .write_buffer_size(2 * 1024)
        .on_upgrade(move |socket| serve(state, socket, protocol))
}

/// What `connection_init` established, read by the connection loop.
#[derive(Default)]
struct Session {
    /// The token's expiry (Unix seconds) and whom it speaks for.
    signed_in: Option<(i64, Principal)>,
    /// Why the init was refused, as a close code and reason.
    refused: Option<(u16, String)>,
}

async fn serve(state: AppState, socket: WebSocket, protocol: Protocols) {
    metrics::gauge!("graphql_ws_connections_open").increment(1.0);
    let _held = state.drain.hold();
    let within = state.config.ws_write_timeout;
    let (mut sink, source) = socket.split();
    let session = Arc::new(Mutex::new(Session::default()));
    let incoming = source
        .take_while(|m| futures_util::future::ready(m.is_ok()))
        .filter_map(|m| {
            futures_util::future::ready(match m {
                Ok(Message::Text(text)) => Some(text.as_str().to_owned().into_bytes()),
                Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
                _ => None,
            })
        });
    let mut slots = Data::default();
    slots.insert(ConnectionSlots(Arc::new(tokio::sync::Semaphore::new(
        state.config.subscriptions_per_connection,
    ))));
    let init_state = state.clone();
    let init_session = session.clone();
    let mut graphql = GraphQLWebSocket::new(state.schema.clone(), incoming, protocol)
        .connection_data(slots)
        .on_connection_init(move |payload| async move {
            let outcome = authenticate(&init_state, payload).await;
            let mut session = init_session.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Ok((principal, expires)) => {
                    let mut data = Data::default();
                    match &principal {
                        Principal::Member(actor) => data.insert(actor.clone()),
                        Principal::Patron(patron) => data.insert(patron.clone()),
                    }
                    data.insert(principal.clone());
                    session.signed_in = Some((expires, principal));
                    Ok(data)
                }
                Err((code, reason)) => {
                    session.refused = Some((code, reason.clone()));
                    Err(async_graphql::Error::new(reason))
                }
            }
        });

    // Membership removals and expiry are watched once signed in.
    let mut watch: Option<switchyard_core::events::Subscription> = None;
    let mut expires_at: Option<tokio::time::Instant> = None;
    // A socket must sign in soon (the protocol's 4408); once signed in, the token's expiry bounds its life, so an
    // idle subscriber needs no pings and a vanished one is gone within a token lifetime.
    let init_deadline = tokio::time::Instant::now() + INIT_TIMEOUT;
    let close = loop {
        let message = tokio::select! {
            message = graphql.next() => message,
            _ = sleep_until(Some(init_deadline)), if expires_at.is_none() => {
                break Some((INIT_TIMED_OUT, "send connection_init first".to_owned()));
            }
            _ = sleep_until(expires_at) => {
                break Some((FORBIDDEN, "the access token expired; connect again with a fresh one".to_owned()));
            }
            // The process is stopping: the client reconnects (to another replica) and resumes with `after`.
            _ = state.drain.started() => {
                break Some((crate::drain::RESTART, crate::drain::RESTART_REASON.to_owned()));
            }
            membership = membership(&mut watch, &session) => match membership {
                Membership::Removed => {
                    break Some((FORBIDDEN, "this login no longer belongs to the tenant".to_owned()));
                }
                // What it was signed in with no longer holds: connecting again (with the same token) reads the new
                // role and venues, and resumes with `after`.
                Membership::Changed => {
                    break Some((crate::drain::RESTART, "this login's role or venues changed; connect again".to_owned()));
                }
                Membership::Same => continue,
            }
        };
        let Some(message) = message else { break None };
        match message {
            WsMessage::Text(text) => {
                if expires_at.is_none() {
                    let signed_in = session
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .signed_in
                        .clone();
                    if let Some((expires, principal)) = signed_in {
                        let left = expires - chrono::Utc::now().timestamp();
                        expires_at = Some(
                            tokio::time::Instant::now()
                                + std::time::Duration::from_secs(left.max(0) as u64),
                        );
                        if let Principal::Member(_) = principal {
                            match state.events.subscribe(principal.tenant()).await {
                                Ok(s) => watch = Some(s),
                                Err(e) => {
                                    let e = ApiError::from(e);
                                    break Some((FORBIDDEN, e.message));
                                }
                            }
                        }
                    }
                }
                let frame = Message::Text(text.into());
                if crate::ws::send(&mut sink, frame, within, "graphql")
                    .await
                    .is_err()
                {
                    break None;
                }
            }
            WsMessage::Close(code, reason) => {
                // The library refuses a bad init with 1002; the protocol's codes say why.
                let refused = session
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .refused
                    .take();
                break Some(refused.unwrap_or((code, reason)));
            }
        }
    };
    // The legacy protocol refuses an init with a `connection_error` message and then ends the stream: close with
    // the code that says why, as for graphql-transport-ws.
    let close = close.or_else(|| {
        session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refused
            .take()
    });
    if let Some((code, reason)) = close {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = crate::ws::send(&mut sink, frame, within, "graphql").await;
    }
    let _ = tokio::time::timeout(within, sink.close()).await;
    metrics::gauge!("graphql_ws_connections_open").decrement(1.0);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What became of the signed-in member's membership.
enum Membership {
    Removed,
    /// Another role or other venues.
    Changed,
    /// Nothing yet; ask again.
    Same,
}

/// Resolves when the signed-in member is removed from the tenant or its role or venues change (or `Same`, to be
/// asked again); never while nothing is watched.
async fn membership(
    watch: &mut Option<switchyard_core::events::Subscription>,
    session: &Mutex<Session>,
) -> Membership {
    let Some(subscription) = watch else {
        return std::future::pending().await;
    };
    let user = match &session.lock().unwrap_or_else(|e| e.into_inner()).signed_in {
        Some((_, Principal::Member(actor))) => Some(actor.user_id),
        _ => None,
    };
    let Some(user) = user else {
        return std::future::pending().await;
    };
    match subscription.receiver.recv().await {
        Ok(event) if event.user_id == Some(user) => match event.kind.as_str() {
            "member.removed" => Membership::Removed,
            "member.changed" => Membership::Changed,
            _ => Membership::Same,
        },
        Ok(_) => Membership::Same,
        // Missed events may have held the removal; the token's expiry still bounds how long it is heard.
        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Membership::Same,
        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
            *watch = None;
            Membership::Same
        }
    }
}

/// Reads the bearer token from `connection_init`'s payload and authenticates it.
async fn authenticate(
    state: &AppState,
    payload: serde_json::Value,
) -> Result<(Principal, i64), (u16, String)> {
    let value = ["authorization", "Authorization"]
        .iter()
        .find_map(|k| payload.get(*k))
        .and_then(|v| v.as_str());
    let Some(value) = value else {
        return Err((
            UNAUTHORIZED,
            "send {\"authorization\": \"Bearer <access token>\"} as connection_init's payload"
                .to_owned(),
        ));
    };
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return Err((
            UNAUTHORIZED,
            "authorization must be \"Bearer <access token>\"".to_owned(),
        ));
    };
    match state.accounts.authenticate_until(token.trim(), None).await {
        Ok(signed_in) => Ok(signed_in),
        Err(e) => {
            let e = ApiError::from(e);
            let code = if e.code == ErrorCode::Unavailable {
                1013 // try again later
            } else {
                UNAUTHORIZED
            };
            Err((code, e.message))
        }
    }
}
