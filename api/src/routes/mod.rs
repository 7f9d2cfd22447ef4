pub mod auth;
pub mod graphql;
pub mod health;
pub mod sessions;
pub mod stations;
