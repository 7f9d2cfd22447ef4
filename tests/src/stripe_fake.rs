//! A local HTTP fake of the parts of the Stripe API the provider uses, so the real provider code (async-stripe,
//! form encoding, idempotency headers, error bodies) runs in tests. It keeps intents, honours `Idempotency-Key`
//! (a repeated key replays the first answer, until [`StripeFake::forget_keys`], as Stripe forgets them after 24
//! hours), lists a customer's intents newest first, records every request, and behaves like Stripe's test cards:
//! `pm_card_chargeDeclined` attaches but every confirmed charge or hold on it fails with a 402 `card_error`. It
//! refuses amounts as Stripe does: ISK only in whole krona (multiples of 100, Stripe keeping two decimals), the
//! three-decimal currencies only in tens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    /// The form body's fields, or a GET's query parameters.
    pub form: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    /// Part of every id this fake makes, so that two fakes never make the same one (Stripe's ids are unique
    /// across accounts; the dispute and refund webhooks find payments by them across tenants).
    tag: String,
    next: u64,
    intents: HashMap<String, Value>,
    /// Every refund made, through the API or the dashboard, oldest first.
    refunds: Vec<Value>,
    /// Per idempotency key: the request's method, path and form, and the reply, as Stripe keeps them.
    replies: HashMap<String, (Recorded, (u16, Value))>,
    requests: Vec<Recorded>,
}

pub struct StripeFake {
    pub server: MockServer,
    state: Arc<Mutex<State>>,
}

struct Handler(Arc<Mutex<State>>);

impl StripeFake {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State {
            tag: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            ..State::default()
        }));
        Mock::given(any())
            .respond_with(Handler(state.clone()))
            .mount(&server)
            .await;
        Self { server, state }
    }

    /// The base URL for `STRIPE_API_BASE`.
    pub fn url(&self) -> String {
        format!("{}/", self.server.uri())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .clone()
    }

    /// Requests to `path` with `method`.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// Forgets every idempotency key, as Stripe does 24 hours after a key's first use: a request sent again now
    /// is made again.
    pub fn forget_keys(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replies
            .clear();
    }

    /// Every intent made, oldest first.
    pub fn intents(&self) -> Vec<Value> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut intents: Vec<Value> = state.intents.values().cloned().collect();
        intents.sort_by_key(|i| i["id"].as_str().map(str::to_owned));
        intents
    }

    pub fn intent(&self, id: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .intents
            .get(id)
            .cloned()
    }

    /// The patron's app confirms the intent and the card pays: it succeeds. Returns the intent as a webhook's
    /// `data.object` would carry it.
    pub fn pay(&self, id: &str) -> Value {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(intent) = state.intents.get_mut(id) else {
            return Value::Null;
        };
        intent["status"] = json!("succeeded");
        intent["amount_received"] = intent["amount"].clone();
        intent.clone()
    }
}

impl StripeFake {
    /// Someone refunds `amount` of a paid intent in Stripe's dashboard. Returns the refund, as the `refund.created`
    /// webhook's `data.object` carries it (none of the intent's metadata).
    pub fn refund_in_dashboard(&self, intent: &str, amount: i64) -> Value {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let currency = state
            .intents
            .get(intent)
            .map_or(Value::Null, |i| i["currency"].clone());
        state.refund(intent, amount, currency)
    }

    /// Every refund made, oldest first, as the `refund.created` webhook's `data.object` carries each.
    pub fn refunds(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refunds
            .clone()
    }

    /// The cardholder disputes `amount` of a paid intent's charge: the dispute, as the `charge.dispute.*`
    /// webhooks' `data.object` carries it (none of the intent's metadata).
    pub fn dispute(&self, intent: &str, amount: i64, reason: &str) -> Value {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = state.id("du");
        let currency = state
            .intents
            .get(intent)
            .map_or(Value::Null, |i| i["currency"].clone());
        json!({
            "id": id, "object": "dispute", "amount": amount, "currency": currency, "reason": reason,
            "status": "needs_response", "payment_intent": intent,
            "charge": format!("ch_{}", intent.trim_start_matches("pi_")), "metadata": {}, "livemode": false,
        })
    }
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn card_error(intent: Option<&Value>) -> (u16, Value) {
    let mut error = json!({
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "generic_decline",
        "message": "Your card was declined."
    });
    if let Some(intent) = intent {
        error["payment_intent"] = intent.clone();
    }
    (402, json!({ "error": error }))
}

/// Stripe's answer to an amount it does not take in `currency` (lowercase), if it does not.
fn refused_amount(currency: &str, amount: i64) -> Option<(u16, Value)> {
    let (step, code) = match currency {
        "isk" => (100, "invalid_charge_amount_no_decimal_compatible"),
        "bhd" | "jod" | "kwd" | "omr" | "tnd" => (10, "invalid_charge_amount"),
        _ => return None,
    };
    (amount % step != 0).then(|| {
        (
            400,
            json!({"error": {"type": "invalid_request_error", "code": code,
                "message": format!("Invalid amount: {currency} amounts must be evenly divisible by {step}.")}}),
        )
    })
}

fn not_found(what: &str) -> (u16, Value) {
    (
        404,
        json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": format!("No such {what}")}}),
    )
}

impl State {
    fn refund(&mut self, intent: &str, amount: i64, currency: Value) -> Value {
        let id = self.id("re");
        let refund = json!({"id": id, "object": "refund", "amount": amount, "created": 1_700_000_000,
            "currency": currency, "payment_intent": intent, "status": "succeeded", "metadata": {}});
        self.refunds.push(refund.clone());
        refund
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_fake{}{:06}", self.tag, self.next)
    }

    fn handle(&mut self, method: &str, path: &str, f: &HashMap<String, String>) -> (u16, Value) {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, parts.as_slice()) {
            ("POST", ["v1", "customers"]) => {
                let id = self.id("cus");
                (
                    200,
                    json!({
                        "id": id, "object": "customer", "created": 1_700_000_000, "livemode": false,
                        "email": f.get("email"), "name": f.get("name"),
                        "metadata": metadata(f),
                    }),
                )
            }
            ("POST", ["v1", "payment_methods", pm, "attach"]) => (
                200,
                json!({
                    "id": pm, "object": "payment_method", "created": 1_700_000_000, "livemode": false,
                    "type": "card", "billing_details": {}, "customer": f.get("customer"),
                    "card": {"brand": "visa", "exp_month": 12, "exp_year": 2030, "funding": "credit", "last4": "4242"},
                }),
            ),
            ("POST", ["v1", "payment_intents"]) => {
                let id = self.id("pi");
                let amount: i64 = f.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0);
                if let Some(refused) =
                    refused_amount(f.get("currency").map_or("", String::as_str), amount)
                {
                    return refused;
                }
                let manual = f.get("capture_method").map(String::as_str) == Some("manual");
                let confirm = f.get("confirm").map(String::as_str) == Some("true");
                let declines =
                    f.get("payment_method").map(String::as_str) == Some("pm_card_chargeDeclined");
                let status = match (confirm, declines, manual) {
                    (false, _, _) => "requires_payment_method",
                    (true, true, _) => "requires_payment_method",
                    (true, false, true) => "requires_capture",
                    (true, false, false) => "succeeded",
                };
                let mut intent = json!({
                    "id": id, "object": "payment_intent", "amount": amount,
                    "amount_capturable": if status == "requires_capture" { amount } else { 0 },
                    "amount_received": if status == "succeeded" { amount } else { 0 },
                    "capture_method": if manual { "manual" } else { "automatic" },
                    "confirmation_method": "automatic", "created": chrono::Utc::now().timestamp(),
                    "currency": f.get("currency"), "livemode": false, "metadata": metadata(f),
                    "payment_method_types": ["card"], "status": status,
                    "customer": f.get("customer"), "payment_method": f.get("payment_method"),
                    "client_secret": format!("{id}_secret_fake"),
                });
                if confirm && declines {
                    intent["last_payment_error"] = json!({"type": "card_error", "code": "card_declined",
                        "decline_code": "generic_decline"});
                    self.intents.insert(id, intent.clone());
                    return card_error(Some(&intent));
                }
                self.intents.insert(id, intent.clone());
                (200, intent)
            }
            ("GET", ["v1", "payment_intents"]) => {
                // Newest first (ids grow), filtered as Stripe does: by customer, by `created[gte]`, a page of
                // `limit` after `starting_after`.
                let since: i64 = f
                    .get("created[gte]")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let limit: usize = f.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
                let mut matching: Vec<&Value> = self
                    .intents
                    .values()
                    .filter(|i| {
                        f.get("customer")
                            .is_none_or(|c| i["customer"] == c.as_str())
                    })
                    .filter(|i| i["created"].as_i64().unwrap_or(0) >= since)
                    .collect();
                matching.sort_by_key(|i| std::cmp::Reverse(i["id"].as_str().map(str::to_owned)));
                if let Some(after) = f.get("starting_after") {
                    let at = matching.iter().position(|i| i["id"] == after.as_str());
                    matching.drain(..at.map_or(0, |p| p + 1));
                }
                let has_more = matching.len() > limit;
                matching.truncate(limit);
                (
                    200,
                    json!({"object": "list", "url": "/v1/payment_intents", "has_more": has_more,
                        "data": matching}),
                )
            }
            ("GET", ["v1", "payment_intents", id]) => match self.intents.get(*id) {
                Some(intent) => (200, intent.clone()),
                None => not_found("payment_intent"),
            },
            ("POST", ["v1", "payment_intents", id, "capture"]) => {
                let Some(intent) = self.intents.get_mut(*id) else {
                    return not_found("payment_intent");
                };
                if intent["status"] != "requires_capture" {
                    return (
                        400,
                        json!({"error": {"type": "invalid_request_error",
                        "code": "payment_intent_unexpected_state", "message": "not capturable"}}),
                    );
                }
                let amount = f
                    .get("amount_to_capture")
                    .and_then(|a| a.parse::<i64>().ok())
                    .unwrap_or_else(|| intent["amount"].as_i64().unwrap_or(0));
                if let Some(refused) =
                    refused_amount(intent["currency"].as_str().unwrap_or_default(), amount)
                {
                    return refused;
                }
                intent["status"] = json!("succeeded");
                intent["amount_received"] = json!(amount);
                intent["amount_capturable"] = json!(0);
                (200, intent.clone())
            }
            ("POST", ["v1", "payment_intents", id, "cancel"]) => {
                let Some(intent) = self.intents.get_mut(*id) else {
                    return not_found("payment_intent");
                };
                if intent["status"] == "succeeded" {
                    return (
                        400,
                        json!({"error": {"type": "invalid_request_error",
                        "code": "payment_intent_unexpected_state", "message": "a succeeded intent cannot be canceled"}}),
                    );
                }
                intent["status"] = json!("canceled");
                intent["amount_capturable"] = json!(0);
                (200, intent.clone())
            }
            ("POST", ["v1", "refunds"]) => {
                let intent = f.get("payment_intent").cloned().unwrap_or_default();
                let Some(paid) = self.intents.get(&intent) else {
                    return not_found("payment_intent");
                };
                if paid["status"] != "succeeded" {
                    return (
                        400,
                        json!({"error": {"type": "invalid_request_error", "message": "not paid"}}),
                    );
                }
                let currency = paid["currency"].clone();
                let amount: i64 = f.get("amount").and_then(|a| a.parse().ok()).unwrap_or(0);
                if let Some(refused) = refused_amount(currency.as_str().unwrap_or_default(), amount)
                {
                    return refused;
                }
                (200, self.refund(&intent, amount, currency))
            }
            _ => not_found("route"),
        }
    }
}

fn metadata(f: &HashMap<String, String>) -> Value {
    let map: serde_json::Map<String, Value> = f
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), json!(v)))
        })
        .collect();
    Value::Object(map)
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let recorded = Recorded {
            method: request.method.to_string(),
            path: request.url.path().to_owned(),
            idempotency_key: header("idempotency-key"),
            authorization: header("authorization"),
            form: match request.url.query() {
                Some(query) if request.method.as_str() == "GET" => form(query.as_bytes()),
                _ => form(&request.body),
            },
        };
        state.requests.push(recorded.clone());
        let replay = recorded
            .idempotency_key
            .as_ref()
            .and_then(|k| state.replies.get(k).cloned());
        let (status, body) = match replay {
            // Stripe answers a key used again with the first reply, but only for the same request: other
            // parameters are an `idempotency_error`.
            Some((first, reply)) => {
                let same = (&first.method, &first.path, &first.form)
                    == (&recorded.method, &recorded.path, &recorded.form);
                if same {
                    reply
                } else {
                    (
                        400,
                        json!({"error": {"type": "idempotency_error", "message":
                            "Keys for idempotent requests can only be used with the same parameters they were first used with."}}),
                    )
                }
            }
            None => {
                let reply = state.handle(&recorded.method, &recorded.path, &recorded.form);
                if let Some(key) = &recorded.idempotency_key {
                    state
                        .replies
                        .insert(key.clone(), (recorded.clone(), reply.clone()));
                }
                reply
            }
        };
        ResponseTemplate::new(status).set_body_json(body)
    }
}
