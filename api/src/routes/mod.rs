pub mod auth;
pub mod graphql;
pub mod health;
pub mod stations;
