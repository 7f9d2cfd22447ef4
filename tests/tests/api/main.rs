//! End-to-end tests of the API against the real test database. One binary, one module per area.
#![expect(
    clippy::unwrap_used,
    reason = "tests and their helpers: a failed step should fail the test"
)]

mod analytics;
mod auth;
mod backup;
mod billing;
mod binaries;
mod cabinets;
mod charging;
mod console;
mod debts;
mod deploy;
mod documents;
mod edge;
mod edge_ocpp;
mod errors;
mod fairness;
mod graphql;
mod isolation;
mod live;
mod members;
mod money;
mod notifications;
mod notify_channels;
mod observability;
mod ocpp_peer;
mod patron_actions;
mod patron_app;
mod payments;
mod production;
mod rentals;
mod report_delivery;
mod reports;
mod rls;
mod sessions;
mod staff;
mod stripe;
