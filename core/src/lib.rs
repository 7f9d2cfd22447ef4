//! Switchyard's core: domain types, tenancy-safe database access, auth, and the queries behind every API.

pub mod accounts;
pub mod analytics;
pub mod audit;
pub mod auth;
pub mod bridges;
pub mod cabinets;
pub mod charging;
pub mod dashboard;
pub mod db;
pub mod documents;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod ledger;
pub mod members;
pub mod model;
pub mod money;
pub mod notify;
pub mod patron_app;
pub mod patrons;
pub mod payments;
pub mod pricing;
pub mod rentals;
pub mod scope;
pub mod secrets;
pub mod sessions;
pub mod signals;
pub mod staff;
pub mod stations;
pub mod tariffs;
pub mod telemetry;
pub mod tenants;
pub mod throttle;
pub mod validate;
pub mod venues;

pub use db::{Db, SystemDb, TenantId, TenantTx};
pub use error::{Error, ErrorCode, Result};
pub use model::{
    Actor, PatronActor, Principal, RequestClient, Role, StationControl, StationKind, StationStatus,
};
