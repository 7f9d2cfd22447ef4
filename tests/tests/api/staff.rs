//! Staff tools (seed 001): venue-scoped members, SOS, tasks, shifts, the safety log and the audit log reader.

mod alerts;
mod isolation;
mod records;
mod scope;

use serde_json::{json, Value};
use switchyard_tests::{unique_email, TestApp};
use uuid::Uuid;

use crate::sessions::Floor;

/// Invites `role` confined to `venues` and accepts as a new login; returns (user id, access token).
pub(crate) async fn add_scoped(
    app: &TestApp,
    by: &str,
    role: &str,
    venues: &[Uuid],
) -> (Uuid, String) {
    let email = unique_email(role);
    let data = app
        .gql_ok(
            by,
            "mutation($e: String!, $r: Role!, $v: [UUID!]) { inviteMember(email: $e, role: $r, venueIds: $v) { invitation { venueIds } } }",
            json!({ "e": email, "r": role, "v": venues }),
        )
        .await;
    assert_eq!(
        data["inviteMember"]["invitation"]["venueIds"],
        json!(venues)
    );
    // The token reaches the invitee's mailbox only.
    let token = switchyard_tests::mail::wait_for(&email, 1).await.token();
    let token = token.as_str();
    let body = app
        .gql(
            None,
            "mutation($t: String!) { acceptInvitation(token: $t, password: \"another-good-password\") { accessToken } }",
            json!({ "t": token }),
        )
        .await;
    let access = body["data"]["acceptInvitation"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = app.gql_ok(&access, "{ me { userId } }", json!({})).await;
    (
        me["me"]["userId"].as_str().unwrap().parse().unwrap(),
        access,
    )
}

/// A second venue with a station, under the floor's tariff.
async fn second_venue(app: &TestApp, f: &Floor) -> (Uuid, Uuid) {
    let venue = app.create_venue(&f.t.access, "Harbour").await;
    let station = app.create_station(&f.t.access, venue, "PC-9").await;
    app.gql_ok(
        &f.t.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": f.tariff, "v": venue}),
    )
    .await;
    (venue, station)
}

fn id(v: &Value) -> Uuid {
    v.as_str().unwrap().parse().unwrap()
}

/// The kinds and venues of the tenant's stored live events of `topic`, in order.
async fn events(
    app: &TestApp,
    tenant: Uuid,
    topic: &str,
) -> Vec<(String, Option<Uuid>, Option<Uuid>)> {
    sqlx::query_as(
        "select kind, venue_id, user_id from live_event where tenant_id = $1 and kind like $2 || '.%' order by seq",
    )
    .bind(tenant)
    .bind(topic)
    .fetch_all(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}
