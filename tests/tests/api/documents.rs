//! Receipts and invoices as PDFs in the real S3-compatible server `./infra/dev.sh test` runs: what they print (read
//! back with pypdf), where they are stored, who gets a download link, idempotency, and gap-free invoice numbers.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_core::documents::{invoices, Store, StoreSettings};
use switchyard_core::{Actor, Role, TenantId};
use switchyard_tests::{gql_code, join_all, spawn_app, unique_email, Tenant, TestApp};
use uuid::Uuid;

use crate::sessions::{floor, start, top_up, Floor};

/// The text of a PDF, as pypdf (an independent reader, from the S3 server's environment) extracts it.
pub(crate) async fn pdf_text(bytes: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let python = std::env::var("SWITCHYARD_S3_PYTHON").unwrap_or_else(|_| {
        panic!("SWITCHYARD_S3_PYTHON is not set: run the suite with ./infra/dev.sh test")
    });
    let mut child = tokio::process::Command::new(python)
        .args([
            "-c",
            "import io, sys, pypdf\n\
             r = pypdf.PdfReader(io.BytesIO(sys.stdin.buffer.read()), strict=True)\n\
             sys.stdout.write('\\n'.join(p.extract_text() for p in r.pages))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("pypdf: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(bytes).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "pypdf could not read the PDF: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// GETs a presigned URL (no token: the signature is the permission) and returns the bytes.
pub(crate) async fn download(app: &TestApp, url: &str) -> Vec<u8> {
    let response = app.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let bytes = response.bytes().await.unwrap().to_vec();
    assert!(bytes.starts_with(b"%PDF-"), "not a PDF from {url}");
    bytes
}

/// Sets legal details and a 19 % VAT at the floor's venue.
async fn legal_and_tax(app: &TestApp, f: &Floor) {
    app.gql_ok(
        &f.t.access,
        "mutation { setLegalDetails(legalName: \"Pixel Palace GmbH\", legalAddress: \"Hauptstrasse 1, Berlin\",
                                     taxId: \"DE999999999\") { legalName } }",
        json!({}),
    )
    .await;
    let tax = app
        .gql_ok(
            &f.t.access,
            "mutation($v: UUID!) { setVenueTax(venueId: $v, rateBp: 1900) { rateBp label } }",
            json!({"v": f.venue}),
        )
        .await;
    assert_eq!(tax["setVenueTax"], json!({"rateBp": 1900, "label": "VAT"}));
}

/// A patron with 50.00 in the wallet.
async fn patron(app: &TestApp, f: &Floor, name: &str) -> Uuid {
    let p = app.create_patron(&f.t.access, name, None).await;
    top_up(app, f, p, 5_000, &Uuid::new_v4().to_string()).await;
    p
}

/// A wallet session of exactly 30 minutes at the floor's 0.10/min, ended: 3.00.
async fn ended_session(app: &TestApp, f: &Floor, patron: Uuid) -> Uuid {
    let (status, body) = start(
        app,
        &f.t.access,
        Some(&Uuid::new_v4().to_string()),
        json!({"station_id": f.station, "patron_id": patron, "duration_minutes": 30, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id: Uuid = body["session_id"].as_str().unwrap().parse().unwrap();
    // Its 30 minutes lie in the past: stopping now bills exactly the planned half hour.
    let mut tx = app.tenant_tx(f.t.id).await;
    sqlx::query(
        "update session set started_at = started_at - interval '31 minutes',
                            planned_end_at = planned_end_at - interval '31 minutes'
          where tenant_id = $1 and id = $2",
    )
    .bind(f.t.id)
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (status, body) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            Some(&f.t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total_amount"], 300, "{body}");
    id
}

const RECEIPT: &str = "query($s: UUID!) { sessionReceipt(sessionId: $s) {
    id sessionId currency total tax byteSize download { url expiresAt } } }";

#[tokio::test]
async fn a_receipt_is_a_stored_pdf_with_the_issuer_the_venues_tax_and_the_priced_lines() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    legal_and_tax(&app, &f).await;
    let ada = patron(&app, &f, "Ada Lovelace").await;
    let session = ended_session(&app, &f, ada).await;

    let data = app
        .gql_ok(&f.t.access, RECEIPT, json!({"s": session}))
        .await;
    let receipt = &data["sessionReceipt"];
    assert_eq!(receipt["sessionId"], session.to_string());
    assert_eq!(receipt["currency"], "EUR");
    // 3.00 with 19 % VAT included: net 300 × 10000 / 11900 = 252.1 → 2.52, tax 0.48.
    assert_eq!(receipt["total"], 300);
    assert_eq!(receipt["tax"], 48);
    let url = receipt["download"]["url"].as_str().unwrap();
    assert!(
        url.contains("X-Amz-Signature=") && url.contains("X-Amz-Expires=300"),
        "{url}"
    );
    assert!(
        url.contains(&format!("/{}/receipts/{session}.pdf", f.t.id)),
        "{url}"
    );

    let bytes = download(&app, url).await;
    assert_eq!(receipt["byteSize"], bytes.len());
    let text = pdf_text(&bytes).await;
    for needle in [
        "Pixel Palace GmbH",
        "Hauptstrasse 1, Berlin",
        "Tax ID: DE999999999",
        "Receipt",
        &format!("Session {session}"),
        "Venue: Arcade",
        "Station: PC-1",
        "Customer: Ada Lovelace",
        "(30 min)",
        "Total",
        "3.00 EUR",
        "of which VAT 19%",
        "0.48 EUR",
        "Net",
        "2.52 EUR",
        "Paid by: Wallet",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    // The priced lines are the session's own explanation.
    let session_view = app
        .get(&format!("/api/v1/sessions/{session}"), &f.t.access)
        .await
        .1;
    for line in session_view["cost_lines"].as_array().unwrap() {
        let description = line["description"].as_str().unwrap();
        assert!(
            text.contains(description),
            "{description:?} missing:\n{text}"
        );
    }

    // Stored once, under the tenant's prefix.
    let mut tx = app.tenant_tx(f.t.id).await;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "select object_key, total, tax from receipt where tenant_id = $1 and session_id = $2",
    )
    .bind(f.t.id)
    .bind(session)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![(format!("{}/receipts/{session}.pdf", f.t.id), 300, 48)]
    );
    tx.commit().await.unwrap();

    // Asking again (GraphQL or REST) gives the same receipt and the same bytes, not a second one.
    let again = app
        .gql_ok(&f.t.access, RECEIPT, json!({"s": session}))
        .await;
    assert_eq!(again["sessionReceipt"]["id"], receipt["id"]);
    let (status, rest) = app
        .get(&format!("/api/v1/sessions/{session}/receipt"), &f.t.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(rest["receipt_id"], receipt["id"]);
    assert_eq!(
        (rest["total"].clone(), rest["tax"].clone()),
        (json!(300), json!(48))
    );
    assert_eq!(download(&app, rest["url"].as_str().unwrap()).await, bytes);
}

#[tokio::test]
async fn concurrent_first_requests_for_a_receipt_make_one_receipt() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let ada = patron(&app, &f, "Ada").await;
    let session = ended_session(&app, &f, ada).await;
    let answers = join_all(
        (0..6)
            .map(|_| app.gql(Some(&f.t.access), RECEIPT, json!({"s": session})))
            .collect(),
    )
    .await;
    let ids: Vec<&Value> = answers
        .iter()
        .map(|a| &a["data"]["sessionReceipt"]["id"])
        .collect();
    assert!(ids[0].is_string(), "{:?}", answers[0]);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let count: i64 = {
        let mut tx = app.tenant_tx(f.t.id).await;
        sqlx::query_scalar("select count(*) from receipt where tenant_id = $1 and session_id = $2")
            .bind(f.t.id)
            .bind(session)
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    };
    assert_eq!(count, 1);
    // No tax rate set: 0 %, and the receipt says so.
    let bytes = download(
        &app,
        answers[0]["data"]["sessionReceipt"]["download"]["url"]
            .as_str()
            .unwrap(),
    )
    .await;
    let text = pdf_text(&bytes).await;
    assert!(text.contains("of which VAT 0%"), "{text}");
}

async fn patron_login(app: &TestApp, tenant: Uuid, name: &str) -> (Uuid, String) {
    let email = unique_email(name);
    let (status, pair) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": tenant, "display_name": name, "email": email, "password": "Blue-Lantern-77"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{pair}");
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let me = app.gql_ok(&token, "{ myProfile { id } }", json!({})).await;
    (
        me["myProfile"]["id"].as_str().unwrap().parse().unwrap(),
        token,
    )
}

#[tokio::test]
async fn a_receipt_is_handed_only_to_its_tenant_and_to_its_own_patron() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (noor, noor_token) = patron_login(&app, f.t.id, "noor").await;
    let (_, sam_token) = patron_login(&app, f.t.id, "sam").await;
    top_up(&app, &f, noor, 5_000, "noor-cash").await;
    let session = ended_session(&app, &f, noor).await;

    const MINE: &str =
        "query($s: UUID!) { myReceipt(sessionId: $s) { id total download { url } } }";
    let mine = app.gql_ok(&noor_token, MINE, json!({"s": session})).await;
    assert_eq!(mine["myReceipt"]["total"], 300);
    let text =
        pdf_text(&download(&app, mine["myReceipt"]["download"]["url"].as_str().unwrap()).await)
            .await;
    assert!(text.contains("Customer: noor"), "{text}");

    // Another patron of the same operator, another tenant, an unknown id: not found, and no URL anywhere.
    let other = app.gql(Some(&sam_token), MINE, json!({"s": session})).await;
    assert_eq!(gql_code(&other), "not_found", "{other}");
    assert!(!other.to_string().contains("X-Amz"), "{other}");
    let stranger: Tenant = app.signup().await;
    let theirs = app
        .gql(Some(&stranger.access), RECEIPT, json!({"s": session}))
        .await;
    assert_eq!(gql_code(&theirs), "not_found", "{theirs}");
    let (_, their_patron) = patron_login(&app, stranger.id, "eve").await;
    let theirs = app
        .gql(Some(&their_patron), MINE, json!({"s": session}))
        .await;
    assert_eq!(gql_code(&theirs), "not_found", "{theirs}");
    assert!(!theirs.to_string().contains("X-Amz"), "{theirs}");
    assert!(!theirs.to_string().contains("X-Amz"), "{theirs}");
    let (status, body) = app
        .get(
            &format!("/api/v1/sessions/{session}/receipt"),
            &stranger.access,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let unknown = app
        .gql(Some(&f.t.access), RECEIPT, json!({"s": Uuid::new_v4()}))
        .await;
    assert_eq!(gql_code(&unknown), "not_found", "{unknown}");
    // A staff token cannot use the patron field, nor a patron the staff one.
    let staff_on_patron_field = app
        .gql(Some(&f.t.access), MINE, json!({"s": session}))
        .await;
    assert_eq!(gql_code(&staff_on_patron_field), "forbidden");
    let patron_on_staff_field = app
        .gql(Some(&noor_token), RECEIPT, json!({"s": session}))
        .await;
    assert_eq!(gql_code(&patron_on_staff_field), "forbidden");
}

#[tokio::test]
async fn receipts_refuse_running_sessions_and_tax_settings_refuse_bad_values() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let ada = patron(&app, &f, "Ada").await;
    let (status, running) = start(
        &app,
        &f.t.access,
        Some("running"),
        json!({"station_id": f.station, "patron_id": ada, "duration_minutes": 30, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let answer = app
        .gql(
            Some(&f.t.access),
            RECEIPT,
            json!({"s": running["session_id"]}),
        )
        .await;
    assert_eq!(gql_code(&answer), "conflict", "{answer}");
    assert!(answer["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("still running"));
    let (status, body) = app
        .get(
            &format!(
                "/api/v1/sessions/{}/receipt",
                running["session_id"].as_str().unwrap()
            ),
            &f.t.access,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = app
        .get("/api/v1/sessions/not-a-uuid/receipt", &f.t.access)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    for (rate, label) in [(10_001, "\"VAT\""), (-1, "\"VAT\""), (1900, "\"\\u0000\"")] {
        let answer = app
            .gql(
                Some(&f.t.access),
                &format!("mutation($v: UUID!) {{ setVenueTax(venueId: $v, rateBp: {rate}, label: {label}) {{ rateBp }} }}"),
                json!({"v": f.venue}),
            )
            .await;
        assert_eq!(gql_code(&answer), "validation_failed", "{answer}");
        assert!(!answer.to_string().contains("sqlx"), "{answer}");
    }
    // Another tenant's venue: not found; staff: forbidden.
    let stranger = app.signup().await;
    let answer = app
        .gql(
            Some(&stranger.access),
            "mutation($v: UUID!) { setVenueTax(venueId: $v, rateBp: 700) { rateBp } }",
            json!({"v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&answer), "not_found", "{answer}");
    let (_, staff) = app.add_member(&f.t, "STAFF").await;
    let answer = app
        .gql(
            Some(&staff),
            "mutation($v: UUID!) { setVenueTax(venueId: $v, rateBp: 700) { rateBp } }",
            json!({"v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&answer), "forbidden", "{answer}");
    let answer = app
        .gql(
            Some(&staff),
            "mutation { setLegalDetails(legalName: \"X\") { legalName } }",
            json!({}),
        )
        .await;
    assert_eq!(gql_code(&answer), "forbidden", "{answer}");
}

const INVOICE_FIELDS: &str =
    "id patronId status number year displayNumber currency total tax issuedAt paidAt voidedAt sessionIds download { url }";

async fn draft(app: &TestApp, f: &Floor, patron: Uuid, sessions: &[Uuid]) -> Value {
    let q = format!(
        "mutation($p: UUID!, $s: [UUID!]!) {{ createInvoice(patronId: $p, sessionIds: $s) {{ {INVOICE_FIELDS} }} }}"
    );
    app.gql(Some(&f.t.access), &q, json!({"p": patron, "s": sessions}))
        .await
}

async fn invoice_op(app: &TestApp, token: &str, op: &str, id: &Value) -> Value {
    let q = format!("mutation($i: UUID!) {{ {op}(id: $i) {{ {INVOICE_FIELDS} }} }}");
    app.gql(Some(token), &q, json!({"i": id})).await
}

#[tokio::test]
async fn an_invoice_goes_from_draft_to_issued_to_paid_and_its_pdf_lists_its_sessions() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    legal_and_tax(&app, &f).await;
    let ada = patron(&app, &f, "Ada Lovelace").await;
    let one = ended_session(&app, &f, ada).await;
    let two = ended_session(&app, &f, ada).await;

    let created = draft(&app, &f, ada, &[one, two, one]).await;
    let inv = created["data"]["createInvoice"].clone();
    assert_eq!(inv["status"], "DRAFT", "{created}");
    assert_eq!(
        (inv["number"].clone(), inv["download"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(
        (inv["total"].clone(), inv["tax"].clone()),
        (json!(600), json!(96))
    );
    assert_eq!(inv["sessionIds"].as_array().unwrap().len(), 2);

    // A session is on one invoice at a time; sessions must be the patron's, ended, known.
    let again = draft(&app, &f, ada, &[two]).await;
    assert_eq!(gql_code(&again), "conflict", "{again}");
    let bob = patron(&app, &f, "Bob").await;
    let bobs = ended_session(&app, &f, bob).await;
    let mixed = draft(&app, &f, ada, &[bobs]).await;
    assert_eq!(gql_code(&mixed), "validation_failed", "{mixed}");
    assert_eq!(mixed["errors"][0]["extensions"]["field"], "sessionIds");
    let none = draft(&app, &f, ada, &[]).await;
    assert_eq!(gql_code(&none), "validation_failed", "{none}");
    let unknown = draft(&app, &f, ada, &[Uuid::new_v4()]).await;
    assert_eq!(gql_code(&unknown), "not_found", "{unknown}");

    // Paying a draft is refused; issuing numbers it and prints it.
    let early = invoice_op(&app, &f.t.access, "markInvoicePaid", &inv["id"]).await;
    assert_eq!(gql_code(&early), "conflict", "{early}");
    let issued = invoice_op(&app, &f.t.access, "issueInvoice", &inv["id"]).await["data"]
        ["issueInvoice"]
        .clone();
    let year = chrono::Datelike::year(&chrono::Utc::now());
    assert_eq!(issued["status"], "ISSUED");
    assert_eq!(issued["number"], 1);
    assert_eq!(issued["displayNumber"], format!("{year}-000001"));
    let text = pdf_text(&download(&app, issued["download"]["url"].as_str().unwrap()).await).await;
    for needle in [
        "Pixel Palace GmbH".to_owned(),
        format!("Invoice {year}-000001"),
        "Billed to: Ada Lovelace".into(),
        "PC-1 (30 min)".into(),
        "6.00 EUR".into(),
        "of which VAT 19% on 6.00 EUR".into(),
        "0.96 EUR".into(),
        "5.04 EUR".into(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing from:\n{text}");
    }
    // Issuing again changes nothing; paying sets paidAt once; a paid invoice is not voided.
    let twice = invoice_op(&app, &f.t.access, "issueInvoice", &inv["id"]).await;
    assert_eq!(twice["data"]["issueInvoice"]["number"], 1, "{twice}");
    let paid = invoice_op(&app, &f.t.access, "markInvoicePaid", &inv["id"]).await["data"]
        ["markInvoicePaid"]
        .clone();
    assert_eq!(paid["status"], "PAID");
    assert!(paid["paidAt"].is_string());
    let repaid = invoice_op(&app, &f.t.access, "markInvoicePaid", &inv["id"]).await;
    assert_eq!(repaid["data"]["markInvoicePaid"]["paidAt"], paid["paidAt"]);
    let voided = invoice_op(&app, &f.t.access, "voidInvoice", &inv["id"]).await;
    assert_eq!(gql_code(&voided), "conflict", "{voided}");

    // A voided draft frees its session for another invoice.
    let bobs_invoice = draft(&app, &f, bob, &[bobs]).await["data"]["createInvoice"]["id"].clone();
    let v = invoice_op(&app, &f.t.access, "voidInvoice", &bobs_invoice).await;
    assert_eq!(v["data"]["voidInvoice"]["status"], "VOID", "{v}");
    // It still lists the session it was about (and so keeps its venue scope), though the session is free again.
    assert_eq!(v["data"]["voidInvoice"]["sessionIds"], json!([bobs]));
    let redo = draft(&app, &f, bob, &[bobs]).await;
    assert_eq!(redo["data"]["createInvoice"]["status"], "DRAFT", "{redo}");

    // A void invoice stays confined to its venue: a manager of another venue sees neither it nor its link, a
    // manager of its venue does.
    let elsewhere = app.create_venue(&f.t.access, "Elsewhere").await;
    let scoped = |venue: Uuid| {
        let app = &app;
        let f = &f;
        async move {
            let (user, token) = app.add_member(&f.t, "MANAGER").await;
            app.gql_ok(
                &f.t.access,
                "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }",
                json!({"u": user, "v": [venue]}),
            )
            .await;
            token
        }
    };
    let outsider = scoped(elsewhere).await;
    let one = "query($i: UUID!) { invoice(id: $i) { id status download { url } } }";
    let hidden = app
        .gql(Some(&outsider), one, json!({"i": bobs_invoice}))
        .await;
    assert_eq!(gql_code(&hidden), "not_found", "{hidden}");
    assert!(!hidden.to_string().contains("X-Amz"));
    let listed = app
        .gql_ok(&outsider, "{ invoices(status: VOID) { id } }", json!({}))
        .await;
    assert_eq!(listed["invoices"], json!([]), "{listed}");
    let insider = scoped(f.venue).await;
    let seen = app.gql_ok(&insider, one, json!({"i": bobs_invoice})).await;
    assert_eq!(seen["invoice"]["status"], "VOID", "{seen}");

    // Lists by patron and status.
    let list = app
        .gql_ok(
            &f.t.access,
            "query($p: UUID!) { invoices(patronId: $p, status: PAID) { id } }",
            json!({"p": ada}),
        )
        .await;
    assert_eq!(list["invoices"], json!([{"id": inv["id"]}]));

    // Other tenants and staff.
    let stranger = app.signup().await;
    let theirs = app
        .gql(
            Some(&stranger.access),
            "query($i: UUID!) { invoice(id: $i) { id download { url } } }",
            json!({"i": inv["id"]}),
        )
        .await;
    assert_eq!(gql_code(&theirs), "not_found", "{theirs}");
    assert!(!theirs.to_string().contains("X-Amz"));
    let before = invoice_status(&app, &f.t.access, &inv["id"]).await;
    for op in ["voidInvoice", "issueInvoice", "markInvoicePaid"] {
        let theirs = invoice_op(&app, &stranger.access, op, &inv["id"]).await;
        assert_eq!(gql_code(&theirs), "not_found", "{op}: {theirs}");
    }
    assert_eq!(
        invoice_status(&app, &f.t.access, &inv["id"]).await,
        before,
        "the invoice is unchanged"
    );
    let (_, staff) = app.add_member(&f.t, "STAFF").await;
    let denied = invoice_op(&app, &staff, "issueInvoice", &inv["id"]).await;
    assert_eq!(gql_code(&denied), "forbidden", "{denied}");
}

async fn invoice_status(app: &TestApp, token: &str, id: &Value) -> Value {
    app.gql_ok(
        token,
        "query($i: UUID!) { invoice(id: $i) { status } }",
        json!({"i": id}),
    )
    .await["invoice"]["status"]
        .clone()
}

/// The acting owner as the core library sees it.
async fn owner_actor(app: &TestApp, t: &Tenant) -> Actor {
    let me = app.gql_ok(&t.access, "{ me { userId } }", json!({})).await;
    Actor {
        tenant: TenantId(t.id),
        user_id: me["me"]["userId"].as_str().unwrap().parse().unwrap(),
        role: Role::Owner,
        request_id: None,
        venues: None,
        client: Default::default(),
    }
}

#[tokio::test]
async fn invoice_numbers_are_gap_free_under_concurrent_issues_and_a_rolled_back_issue_leaves_no_gap(
) {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let ada = patron(&app, &f, "Ada").await;
    const N: usize = 8;
    let mut drafts = Vec::new();
    for _ in 0..N + 1 {
        let session = ended_session(&app, &f, ada).await;
        let created = draft(&app, &f, ada, &[session]).await;
        drafts.push(created["data"]["createInvoice"]["id"].clone());
    }

    // An issue that rolls back (here: its transaction is dropped after the number was taken) gives it back.
    let store = Store::new(
        &StoreSettings::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let actor = owner_actor(&app, &f.t).await;
    let db = switchyard_tests::app_db(2);
    let last: Uuid = drafts[N].as_str().unwrap().parse().unwrap();
    {
        let mut tx = db.begin_tenant(TenantId(f.t.id)).await.unwrap();
        let taken = invoices::issue(&mut tx, &actor, &store, last)
            .await
            .unwrap();
        assert_eq!(taken.number, Some(1));
        // Dropped without commit: rolled back.
    }

    let issued = join_all(
        drafts[..N]
            .iter()
            .map(|id| invoice_op(&app, &f.t.access, "issueInvoice", id))
            .collect(),
    )
    .await;
    let mut numbers: Vec<i64> = issued
        .iter()
        .map(|a| {
            a["data"]["issueInvoice"]["number"]
                .as_i64()
                .unwrap_or_else(|| panic!("{a}"))
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=N as i64).collect::<Vec<_>>());
    let after = invoice_op(&app, &f.t.access, "issueInvoice", &drafts[N]).await;
    assert_eq!(
        after["data"]["issueInvoice"]["number"],
        N as i64 + 1,
        "{after}"
    );

    // Each tenant counts on its own.
    let g = floor(&app).await;
    let bea = patron(&app, &g, "Bea").await;
    let session = ended_session(&app, &g, bea).await;
    let theirs = draft(&app, &g, bea, &[session]).await["data"]["createInvoice"]["id"].clone();
    let theirs = invoice_op(&app, &g.t.access, "issueInvoice", &theirs).await;
    assert_eq!(theirs["data"]["issueInvoice"]["number"], 1, "{theirs}");
}

#[tokio::test]
async fn a_walk_in_cash_sessions_receipt_says_cash_and_names_no_customer() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (status, body) = start(
        &app,
        &f.t.access,
        Some("cash-1"),
        json!({"station_id": f.station, "duration_minutes": 30, "payment": "cash"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let session = body["session_id"].as_str().unwrap();
    let (status, _) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/sessions/{session}"),
            Some(&f.t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let data = app
        .gql_ok(&f.t.access, RECEIPT, json!({"s": session}))
        .await;
    let text = pdf_text(
        &download(
            &app,
            data["sessionReceipt"]["download"]["url"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    assert!(text.contains("Paid by: Cash"), "{text}");
    assert!(!text.contains("Customer:"), "{text}");
    // Without legal details the organisation's name is the issuer.
    let name = app
        .gql_ok(&f.t.access, "{ tenant { name } }", json!({}))
        .await["tenant"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.starts_with(&name), "{text}");
}

#[tokio::test]
async fn a_venues_monthly_report_sums_the_months_ended_sessions_with_their_tax() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    legal_and_tax(&app, &f).await;
    let ada = patron(&app, &f, "Ada").await;
    ended_session(&app, &f, ada).await;
    ended_session(&app, &f, ada).await;
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Europe::Berlin);
    let (year, month) = (chrono::Datelike::year(&now), chrono::Datelike::month(&now));
    const Q: &str = "query($v: UUID!, $y: Int!, $m: Int!) { venueMonthlyReport(venueId: $v, year: $y, month: $m) {
        sessions minutes total tax net currency download { url } } }";
    let data = app
        .gql_ok(&f.t.access, Q, json!({"v": f.venue, "y": year, "m": month}))
        .await;
    let r = &data["venueMonthlyReport"];
    assert_eq!(
        (
            r["sessions"].clone(),
            r["minutes"].clone(),
            r["total"].clone(),
            r["tax"].clone(),
            r["net"].clone()
        ),
        (json!(2), json!(60), json!(600), json!(96), json!(504)),
        "{r}"
    );
    let url = r["download"]["url"].as_str().unwrap();
    assert!(
        url.contains(&format!(
            "/{}/venue-reports/{}/{year:04}-{month:02}.pdf",
            f.t.id, f.venue
        )),
        "{url}"
    );
    let text = pdf_text(&download(&app, url).await).await;
    for needle in [
        format!("Monthly report {year}-{month:02}: Arcade"),
        "Sessions".into(),
        "6.00 EUR".into(),
        "of which VAT 19%".into(),
        "0.96 EUR".into(),
        "pc (2 sessions)".into(),
        "Wallet (2 sessions)".into(),
        "PC-1 (2 sessions)".into(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing from:\n{text}");
    }
    // Another month has none; bad months, other tenants and staff are refused.
    let empty = app
        .gql_ok(&f.t.access, Q, json!({"v": f.venue, "y": 2001, "m": 1}))
        .await;
    assert_eq!(empty["venueMonthlyReport"]["sessions"], 0);
    let bad = app
        .gql(
            Some(&f.t.access),
            Q,
            json!({"v": f.venue, "y": year, "m": 13}),
        )
        .await;
    assert_eq!(gql_code(&bad), "validation_failed", "{bad}");
    assert_eq!(bad["errors"][0]["extensions"]["field"], "month");
    let stranger = app.signup().await;
    let theirs = app
        .gql(
            Some(&stranger.access),
            Q,
            json!({"v": f.venue, "y": year, "m": month}),
        )
        .await;
    assert_eq!(gql_code(&theirs), "not_found", "{theirs}");
    let (_, staff) = app.add_member(&f.t, "STAFF").await;
    let denied = app
        .gql(
            Some(&staff),
            Q,
            json!({"v": f.venue, "y": year, "m": month}),
        )
        .await;
    assert_eq!(gql_code(&denied), "forbidden", "{denied}");
}

#[tokio::test]
async fn sessions_payments_and_ledger_entries_export_as_csv_for_a_period() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let ada = patron(&app, &f, "Ada").await;
    let session = ended_session(&app, &f, ada).await;
    let from = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    const Q: &str = "query($w: Export!, $f: DateTime!, $t: DateTime!, $v: UUID) {
        exportCsv(what: $w, from: $f, to: $t, venueId: $v) }";
    let sessions = app
        .gql_ok(
            &f.t.access,
            Q,
            json!({"w": "SESSIONS", "f": from, "t": to, "v": f.venue}),
        )
        .await["exportCsv"]
        .as_str()
        .unwrap()
        .to_owned();
    let lines: Vec<&str> = sessions.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "id,venue_id,station_id,station,patron_id,status,payment_method,started_at,ended_at,energy_wh,charged_amount,currency"
    );
    assert_eq!(lines.len(), 2, "{sessions}");
    assert!(
        lines[1].starts_with(&format!("{session},{},", f.venue)),
        "{sessions}"
    );
    // Stopped after its planned end: it ended at that end, as `expired`.
    assert!(
        lines[1].contains(",PC-1,") && lines[1].contains(",expired,wallet,"),
        "{sessions}"
    );
    assert!(lines[1].ends_with(",0,300,EUR"), "{sessions}");

    // The ledger: every journal balances in the export too, and the session's charge is there.
    let ledger = app
        .gql_ok(&f.t.access, Q, json!({"w": "LEDGER", "f": from, "t": to}))
        .await["exportCsv"]
        .as_str()
        .unwrap()
        .to_owned();
    let rows: Vec<Vec<&str>> = ledger
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    assert!(rows.len() >= 4, "{ledger}");
    let mut sums = std::collections::HashMap::<&str, i64>::new();
    for r in &rows {
        *sums.entry(r[0]).or_default() += r[9].parse::<i64>().unwrap();
    }
    assert!(sums.values().all(|s| *s == 0), "{ledger}");
    assert!(
        rows.iter()
            .any(|r| r[4] == session.to_string() && r[8] == "wallet" && r[9] == "-300"),
        "{ledger}"
    );
    let payments = app
        .gql_ok(&f.t.access, Q, json!({"w": "PAYMENTS", "f": from, "t": to}))
        .await["exportCsv"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(payments
        .starts_with("id,patron_id,venue_id,kind,status,provider,amount,currency,created_at"));

    // Bad periods, other tenants' venues, staff.
    let bad = app
        .gql(
            Some(&f.t.access),
            Q,
            json!({"w": "SESSIONS", "f": to, "t": from}),
        )
        .await;
    assert_eq!(gql_code(&bad), "validation_failed", "{bad}");
    let stranger = app.signup().await;
    let theirs = app
        .gql(
            Some(&stranger.access),
            Q,
            json!({"w": "SESSIONS", "f": from, "t": to, "v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&theirs), "not_found", "{theirs}");
    let own = app
        .gql_ok(
            &stranger.access,
            Q,
            json!({"w": "SESSIONS", "f": from, "t": to}),
        )
        .await;
    assert_eq!(
        own["exportCsv"]
            .as_str()
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .count(),
        1
    );
    let (_, staff) = app.add_member(&f.t, "STAFF").await;
    let denied = app
        .gql(
            Some(&staff),
            Q,
            json!({"w": "SESSIONS", "f": from, "t": to}),
        )
        .await;
    assert_eq!(gql_code(&denied), "forbidden", "{denied}");
}
