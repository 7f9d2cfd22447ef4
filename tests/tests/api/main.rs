//! End-to-end tests of the API against the real test database. One binary, one module per area.

mod auth;
mod binaries;
mod errors;
mod graphql;
mod isolation;
mod members;
mod rls;
