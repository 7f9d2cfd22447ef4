pub mod auth;
pub mod dashboard;
pub mod graphql;
pub mod health;
pub mod payments;
pub mod rentals;
pub mod sessions;
pub mod stations;
