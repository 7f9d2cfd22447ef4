//! A member confined to some venues: what it sees, and what a scoped manager may grant.

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{gql_code, spawn_app};
use uuid::Uuid;

use super::{add_scoped, id, second_venue};
use crate::sessions::{floor, start};

#[tokio::test]
async fn a_staff_member_scoped_to_one_venue_sees_only_that_venue_and_not_found_for_the_other() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (other, other_station) = second_venue(&app, &f).await;
    let (code, other_session) = start(
        &app,
        &f.t.access,
        Some("other-venue-walk-in"),
        json!({"station_id": other_station, "duration_minutes": 30, "payment": "cash"}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{other_session}");
    let other_session = other_session["session_id"].as_str().unwrap().to_owned();
    let (staff_id, staff) = add_scoped(&app, &f.t.access, "STAFF", &[f.venue]).await;

    let data = app
        .gql_ok(
            &staff,
            "{ venues { id } stations { id } sessions { id } members { userId venueIds } }",
            json!({}),
        )
        .await;
    assert_eq!(data["venues"], json!([{"id": f.venue}]));
    assert_eq!(data["stations"], json!([{"id": f.station}]));
    assert_eq!(
        data["sessions"],
        json!([]),
        "the other venue's session is not listed"
    );
    let me = data["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["userId"] == json!(staff_id))
        .unwrap();
    assert_eq!(me["venueIds"], json!([f.venue]));

    for (query, variables) in [
        ("query($id: UUID!) { venue(id: $id) { id } }", json!({"id": other})),
        ("query($id: UUID!) { station(id: $id) { id } }", json!({"id": other_station})),
        ("query($id: UUID!) { session(id: $id) { id } }", json!({"id": other_session})),
        ("mutation($id: UUID!) { stopSession(id: $id) { id } }", json!({"id": other_session})),
        ("query($id: UUID!) { deviceCommands(stationId: $id) { id } }", json!({"id": other_station})),
        (
            "mutation($s: UUID!) { startSession(input: {stationId: $s, durationMinutes: 10, payment: CASH}) { id } }",
            json!({"s": other_station}),
        ),
        (
            "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: HIGH}) { id } }",
            json!({"v": other}),
        ),
        ("mutation($v: UUID!) { clockIn(venueId: $v) { id } }", json!({"v": other})),
        ("query($v: UUID!) { venueFloor(venueId: $v) { count } }", json!({"v": other})),
    ] {
        let body = app.gql(Some(&staff), query, variables).await;
        assert_eq!(gql_code(&body), "not_found", "{query} -> {body}");
    }
    let status: String =
        sqlx::query_scalar("select status::text from session where tenant_id = $1 and id = $2")
            .bind(f.t.id)
            .bind(id(&json!(other_session)))
            .fetch_one(&mut *app.tenant_tx(f.t.id).await)
            .await
            .unwrap();
    assert_eq!(status, "active", "the other venue's session still runs");

    // REST answers the same way.
    let (code, body) = app
        .get(&format!("/api/v1/stations/{other_station}"), &staff)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let (code, body) = app
        .get(&format!("/api/v1/sessions/{other_session}"), &staff)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    for qr in [
        format!("/api/v1/stations/{other_station}/qr"),
        format!("/api/v1/venues/{other}/qr"),
    ] {
        let (code, body) = app.get(&qr, &staff).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{qr}: {body}");
    }
    let (code, body) = app
        .get(&format!("/api/v1/stations/{}/qr", f.station), &staff)
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        body["payload"]
            .as_str()
            .unwrap()
            .starts_with("switchyard://s/"),
        "{body}"
    );
    let (_, body) = app.get("/api/v1/dashboard", &staff).await;
    let venues: Vec<&Value> = body["venues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["venue_id"])
        .collect();
    assert_eq!(venues, [&json!(f.venue)]);

    // A tier is a discount, which only a manager gives: staff create standard patrons (before, createPatron took
    // any tier from staff, though setPatronTier needs a manager).
    let body = app
        .gql(
            Some(&staff),
            "mutation { createPatron(input: {displayName: \"Friend\", tier: \"vip\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden", "{body}");
    let data = app
        .gql_ok(
            &staff,
            "mutation { createPatron(input: {displayName: \"Walk-in\"}) { tier } }",
            json!({}),
        )
        .await;
    assert_eq!(data["createPatron"]["tier"], "standard");
    let patrons: i64 = sqlx::query_scalar(
        "select count(*) from patron where tenant_id = $1 and display_name = 'Friend'",
    )
    .bind(f.t.id)
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(patrons, 0);

    // Widened by the owner, the member sees both at its next request.
    let data = app
        .gql_ok(
            &f.t.access,
            "mutation($u: UUID!) { setMemberVenues(userId: $u, venueIds: null) { venueIds } }",
            json!({"u": staff_id}),
        )
        .await;
    assert_eq!(data["setMemberVenues"]["venueIds"], Value::Null);
    let data = app.gql_ok(&staff, "{ venues { id } }", json!({})).await;
    assert_eq!(data["venues"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_scoped_manager_grants_only_its_own_venues() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (other, _) = second_venue(&app, &f).await;
    let (_, manager) = add_scoped(&app, &f.t.access, "MANAGER", &[f.venue]).await;
    let (staff_id, _) = add_scoped(&app, &manager, "STAFF", &[f.venue]).await;

    let set = "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { venueIds } }";
    let body = app
        .gql(Some(&manager), set, json!({"u": staff_id, "v": [other]}))
        .await;
    assert_eq!(gql_code(&body), "not_found", "{body}");
    let body = app
        .gql(Some(&manager), set, json!({"u": staff_id, "v": null}))
        .await;
    assert_eq!(gql_code(&body), "forbidden", "{body}");
    let body = app
        .gql(Some(&manager), set, json!({"u": staff_id, "v": []}))
        .await;
    assert_eq!(gql_code(&body), "validation_failed", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "venueIds");
    let body = app
        .gql(
            Some(&manager),
            "mutation($v: [UUID!]) { inviteMember(email: \"x@example.com\", role: STAFF, venueIds: $v) { invitation { id } } }",
            json!({"v": [other]}),
        )
        .await;
    assert_eq!(gql_code(&body), "not_found", "{body}");
    let stored: Vec<Uuid> = sqlx::query_scalar(
        "select venue_id from member_venue where tenant_id = $1 and user_id = $2",
    )
    .bind(f.t.id)
    .bind(staff_id)
    .fetch_all(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(stored, [f.venue], "the staff member's venues are unchanged");
}

/// What a manager granted by invitation goes when the manager does: a dismissed manager's pending invitation is
/// withdrawn (before, the invitee could accept it for seven days and be let in on the dismissed manager's word),
/// and so is one of a manager whose role changes; an invitation of a member who stays as they were still holds.
#[tokio::test]
async fn a_members_pending_invitations_are_withdrawn_when_it_leaves_or_its_role_changes() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (leaving_id, leaving) = add_scoped(&app, &f.t.access, "MANAGER", &[f.venue]).await;
    let (demoted_id, demoted) = add_scoped(&app, &f.t.access, "MANAGER", &[f.venue]).await;
    let (_, staying) = add_scoped(&app, &f.t.access, "MANAGER", &[f.venue]).await;
    let mut tokens = vec![];
    for (by, who) in [
        (&leaving, "friend"),
        (&demoted, "pal"),
        (&staying, "colleague"),
    ] {
        let email = switchyard_tests::unique_email(who);
        app.gql_ok(
            by,
            "mutation($e: String!, $v: [UUID!]) { inviteMember(email: $e, role: MANAGER, venueIds: $v) { invitation { id } } }",
            json!({"e": email, "v": [f.venue]}),
        )
        .await;
        tokens.push(switchyard_tests::mail::wait_for(&email, 1).await.token());
    }
    app.gql_ok(
        &f.t.access,
        "mutation($u: UUID!) { removeMember(userId: $u) { userId } }",
        json!({"u": leaving_id}),
    )
    .await;
    app.gql_ok(
        &f.t.access,
        "mutation($u: UUID!) { changeMemberRole(userId: $u, role: STAFF) { role } }",
        json!({"u": demoted_id}),
    )
    .await;
    let accept = "mutation($t: String!) { acceptInvitation(token: $t, password: \"another-good-password\") { accessToken } }";
    for token in &tokens[..2] {
        let body = app.gql(None, accept, json!({"t": token})).await;
        assert_eq!(gql_code(&body), "conflict", "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("withdrawn"),
            "{body}"
        );
    }
    let body = app.gql(None, accept, json!({"t": tokens[2]})).await;
    assert!(
        body["data"]["acceptInvitation"]["accessToken"].is_string(),
        "{body}"
    );
    let withdrawn: Vec<(String, Value)> = sqlx::query_as(
        "select action, detail from audit_log where tenant_id = $1 and action in ('member.remove', 'member.change_role')
         order by created_at",
    )
    .bind(f.t.id)
    .fetch_all(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(
        withdrawn
            .iter()
            .map(|(a, d)| (a.as_str(), d["invitations_withdrawn"].as_i64()))
            .collect::<Vec<_>>(),
        [("member.remove", Some(1)), ("member.change_role", Some(1))]
    );
}

/// An invitation sent while its sender is being removed waits for the removal and is refused: the withdrawal of a
/// removed member's invitations cannot see one not committed yet, so the invitation itself must not outlive the
/// authority it was sent on. The removal is held open in a transaction until the invitation waits on it (its
/// look at the inviter's membership, found by its text among the database's lock waits), so the two meet whatever
/// the machine's speed.
#[tokio::test]
async fn an_invitation_sent_while_its_sender_is_removed_waits_for_the_removal_and_is_refused() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (manager_id, manager) = add_scoped(&app, &f.t.access, "MANAGER", &[f.venue]).await;
    let mut removal = app.owner.begin().await.unwrap();
    sqlx::query("delete from membership where tenant_id = $1 and user_id = $2")
        .bind(f.t.id)
        .bind(manager_id)
        .execute(&mut *removal)
        .await
        .unwrap();
    let email = switchyard_tests::unique_email("late");
    let invite = app.gql(
        Some(&manager),
        "mutation($e: String!, $v: [UUID!]) { inviteMember(email: $e, role: MANAGER, venueIds: $v) { invitation { id } } }",
        json!({"e": email, "v": [f.venue]}),
    );
    let release = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
                  where datname = current_database() and wait_event_type = 'Lock'
                    and query like '%from membership%for share%'",
            )
            .fetch_one(&app.owner)
            .await
            .unwrap();
            if waiting >= 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the invitation never waited for the removal"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        removal.commit().await.unwrap();
    };
    let (body, ()) = tokio::join!(invite, release);
    assert_eq!(gql_code(&body), "forbidden", "{body}");
    let invited: i64 =
        sqlx::query_scalar("select count(*) from invitation where tenant_id = $1 and email = $2")
            .bind(f.t.id)
            .bind(&email)
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(invited, 0);
}
