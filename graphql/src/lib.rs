//! Switchyard's GraphQL schema. One `MergedObject` per domain; the API crate serves it at `/graphql`.
//!
//! Per request, the API inserts the authenticated [`Actor`] (when there is one) and a [`loaders::Loaders`] set.
//! Every resolver reaches tenant data through `Db::begin_tenant(actor.tenant)`.

mod account;
mod limits;
pub mod loaders;
mod members;
mod patrons;
mod rentals;
mod sessions;
mod stations;
mod tariffs;
mod venues;

use async_graphql::{
    BatchRequest, BatchResponse, Context, EmptySubscription, ErrorExtensions, MergedObject,
    Response, Schema, ServerError,
};
use std::sync::Arc;

use switchyard_core::accounts::Accounts;
use switchyard_core::payments::PaymentProvider;
use switchyard_core::{Actor, Db, ErrorCode, Role, TenantTx};

pub use limits::Limits;
pub use members::RequestId;
pub use sessions::BillingTick;

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    account::AccountQuery,
    venues::VenueQuery,
    stations::StationQuery,
    members::MemberQuery,
    tariffs::TariffQuery,
    patrons::PatronQuery,
    sessions::SessionQuery,
    rentals::RentalQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    account::AccountMutation,
    venues::VenueMutation,
    stations::StationMutation,
    members::MemberMutation,
    tariffs::TariffMutation,
    patrons::PatronMutation,
    sessions::SessionMutation,
    rentals::RentalMutation,
);

pub type AppSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Builds the schema with its limits. Introspection is off when `limits.introspection` is false (production).
pub fn build(
    db: Db,
    accounts: Accounts,
    limits: Limits,
    tick: BillingTick,
    payments: Arc<dyn PaymentProvider>,
) -> AppSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .data(db)
    .data(accounts)
    .data(tick)
    .data(payments)
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .limit_recursive_depth((limits.max_depth * 2).max(64))
    .limit_directives(limits.max_directives)
    .extension(limits::AliasLimit(limits.max_aliases));
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
        EmptySubscription,
    )
    .finish()
    .sdl()
}

/// Runs a single request or a batch for `actor` (none when unauthenticated), and gives every error a catalogue
/// code: resolver errors carry theirs; parse, validation and limit errors get `invalid_query`.
pub async fn execute(
    schema: &AppSchema,
    batch: BatchRequest,
    actor: Option<Actor>,
    db: &Db,
) -> BatchResponse {
    let with_data = |request: async_graphql::Request| {
        let loaders = actor
            .as_ref()
            .map(|a| loaders::Loaders::new(db.clone(), a.tenant));
        match (&actor, loaders) {
            (Some(a), Some(l)) => request.data(a.clone()).data(l),
            _ => request,
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

/// The authenticated actor, or `unauthenticated`.
fn actor<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Actor> {
    ctx.data_opt::<Actor>().ok_or_else(|| {
        coded(
            ErrorCode::Unauthenticated,
            "sign in first: send `Authorization: Bearer <access token>`",
        )
    })
}

/// The authenticated actor and a transaction confined to its tenant: how every resolver starts.
fn provider<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a dyn PaymentProvider> {
    Ok(ctx.data::<Arc<dyn PaymentProvider>>()?.as_ref())
}

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
