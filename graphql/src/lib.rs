//! Switchyard's GraphQL schema. One `MergedObject` per domain; the API crate serves it at `/graphql`.
//!
//! Per request, the API inserts the authenticated [`Actor`] (when there is one) and a [`loaders::Loaders`] set.
//! Every resolver reaches tenant data through `Db::begin_tenant(actor.tenant)`.

mod account;
mod analytics;
mod bridges;
mod charging;
mod documents;
mod limits;
pub mod live;
pub mod loaders;
mod members;
mod notifications;
mod patron_actions;
mod patrons;
mod rentals;
mod self_service;
mod sessions;
mod staff;
mod stations;
mod tariffs;
mod venues;

use async_graphql::{
    BatchRequest, BatchResponse, Context, ErrorExtensions, MergedObject, Response, Schema,
    ServerError,
};
use std::sync::Arc;

use switchyard_core::accounts::Accounts;
use switchyard_core::payments::PaymentProvider;
use switchyard_core::{Actor, Db, ErrorCode, PatronActor, Principal, Role, TenantTx};

pub use limits::Limits;
pub use members::RequestId;
pub use sessions::BillingTick;

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    account::AccountQuery,
    venues::VenueQuery,
    stations::StationQuery,
    members::MemberQuery,
    notifications::NotificationQuery,
    notifications::PreferenceQuery,
    tariffs::TariffQuery,
    patrons::PatronQuery,
    sessions::SessionQuery,
    rentals::RentalQuery,
    bridges::BridgeQuery,
    charging::ChargingQuery,
    staff::StaffQuery,
    patron_actions::PatronActionQuery,
    self_service::SelfServiceQuery,
    documents::DocumentQuery,
    analytics::AnalyticsQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    account::AccountMutation,
    venues::VenueMutation,
    stations::StationMutation,
    members::MemberMutation,
    notifications::NotificationMutation,
    tariffs::TariffMutation,
    patrons::PatronMutation,
    sessions::SessionMutation,
    rentals::RentalMutation,
    bridges::BridgeMutation,
    charging::ChargingMutation,
    staff::StaffMutation,
    patron_actions::PatronActionMutation,
    self_service::SelfServiceMutation,
    documents::DocumentMutation,
);

pub use live::SubscriptionRoot;

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema with its limits. Introspection is off when `limits.introspection` is false (production).
pub fn build(
    db: Db,
    accounts: Accounts,
    limits: Limits,
    tick: BillingTick,
    payments: switchyard_core::payments::accounts::Providers,
    events: Arc<switchyard_core::events::EventHub>,
    documents: switchyard_core::documents::Store,
) -> AppSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .data(db)
    .data(events)
    .data(accounts)
    .data(tick)
    .data(payments)
    .data(documents)
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .limit_recursive_depth((limits.max_depth * 2).max(64))
    .limit_directives(limits.max_directives)
    .extension(limits::AliasLimit(limits.max_aliases))
    .extension(limits::TextInputs);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The exported SDL (`graphql/schema.graphql`).
pub fn sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .finish()
    .sdl()
}

/// Runs a single request or a batch for `actor` (none when unauthenticated), and gives every error a catalogue
/// code: resolver errors carry theirs; parse, validation and limit errors get `invalid_query`.
pub async fn execute(
    schema: &AppSchema,
    batch: BatchRequest,
    principal: Option<Principal>,
    db: &Db,
) -> BatchResponse {
    // Resolvers read the request's own, bounded handle (request data comes before the schema's).
    let with_data = |request: async_graphql::Request| match &principal {
        None => request.data(db.clone()),
        Some(p) => {
            let request = request.data(db.clone());
            let request = request.data(loaders::Loaders::new(db.clone(), p.tenant()));
            match p {
                Principal::Member(actor) => request.data(actor.clone()),
                Principal::Patron(patron) => request.data(patron.clone()),
            }
        }
    };
    match batch {
        BatchRequest::Single(request) => {
            BatchResponse::Single(finish(schema.execute(with_data(request)).await))
        }
        BatchRequest::Batch(requests) => {
            let mut responses = Vec::with_capacity(requests.len());
            for request in requests {
                responses.push(finish(schema.execute(with_data(request)).await));
            }
            BatchResponse::Batch(responses)
        }
    }
}

fn finish(mut response: Response) -> Response {
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if !has_code {
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", ErrorCode::InvalidQuery.as_str());
        }
    }
    response
}

/// A GraphQL error with a catalogue code.
pub fn coded(code: ErrorCode, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code.as_str()))
}

/// The complexity of a list field: each of the up to `limit` rows costs what one row's selection costs, so a
/// request for many rows with many fields each is refused before it runs (`GRAPHQL_MAX_COMPLEXITY`).
pub(crate) fn rows(limit: i64, child_complexity: usize) -> usize {
    (limit.clamp(1, 500) as usize)
        .saturating_mul(child_complexity.max(1))
        .saturating_add(1)
}

/// A top-level error response (used by the API for batch and body limits before anything executes).
pub fn request_error(code: ErrorCode, message: &str) -> Response {
    let mut error = ServerError::new(message, None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
    Response::from_errors(vec![error])
}

/// Maps core errors to GraphQL errors with `extensions.code` (and `extensions.field` for validation). Internal
/// causes are logged here and never reach the client.
trait GqlResult<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResult<T> for Result<T, switchyard_core::Error> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| {
            if let Some(cause) = e.hidden_cause() {
                tracing::error!(error = ?cause, code = e.code().as_str(), "resolver failed");
            }
            let field = e.field();
            let code = e.code();
            coded(code, e.to_string()).extend_with(|_, ext| {
                if let Some(field) = field {
                    ext.set("field", field);
                }
            })
        })
    }
}

/// The authenticated member, or `unauthenticated` (`forbidden` for a patron: staff fields are not theirs).
fn actor<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Actor> {
    if let Some(actor) = ctx.data_opt::<Actor>() {
        return Ok(actor);
    }
    if ctx.data_opt::<PatronActor>().is_some() {
        return Err(coded(
            ErrorCode::Forbidden,
            "this is for the operator's staff; patrons use myProfile, mySessions and myWallet",
        ));
    }
    Err(coded(
        ErrorCode::Unauthenticated,
        "sign in first: send `Authorization: Bearer <access token>`",
    ))
}

/// The signed-in patron and a transaction confined to its tenant (patron-only fields).
async fn begin_patron<'a>(
    ctx: &'a Context<'_>,
) -> async_graphql::Result<(&'a PatronActor, TenantTx)> {
    let Some(patron) = ctx.data_opt::<PatronActor>() else {
        return Err(coded(
            ErrorCode::Forbidden,
            "this is for a signed-in patron (log in at /api/v1/auth/patron/login)",
        ));
    };
    let tx = ctx.data::<Db>()?.begin_tenant(patron.tenant).await.gql()?;
    Ok((patron, tx))
}

/// A transaction for reading patron `id`'s own things: staff may read any patron, a patron only itself.
async fn begin_for_patron(ctx: &Context<'_>, id: uuid::Uuid) -> async_graphql::Result<TenantTx> {
    if let Some(patron) = ctx.data_opt::<PatronActor>() {
        if patron.patron_id != id {
            return Err(coded(ErrorCode::NotFound, "patron not found"));
        }
        return ctx.data::<Db>()?.begin_tenant(patron.tenant).await.gql();
    }
    Ok(begin(ctx).await?.1)
}

/// The payment provider the tenant of `tx` uses now: its own Stripe account when it stored keys, else the
/// platform's.
async fn provider(
    ctx: &Context<'_>,
    tx: &mut TenantTx,
) -> async_graphql::Result<Arc<dyn PaymentProvider>> {
    ctx.data::<switchyard_core::payments::accounts::Providers>()?
        .current(tx)
        .await
        .gql()
}

/// The authenticated actor and a transaction confined to its tenant: how every resolver starts.
async fn begin<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<(&'a Actor, TenantTx)> {
    let actor = actor(ctx)?;
    let tx = ctx.data::<Db>()?.begin_tenant(actor.tenant).await.gql()?;
    Ok((actor, tx))
}

/// Lets only owners and managers through.
struct ManagerGuard;

impl async_graphql::Guard for ManagerGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let actor = actor(ctx)?;
        match actor.role {
            Role::Owner | Role::Manager => Ok(()),
            Role::Staff => Err(coded(
                ErrorCode::Forbidden,
                "this needs the owner or manager role",
            )),
        }
    }
}
