//! obmen: a company's API integrations on one small VPS, with a journal of every exchange,
//! a durable queue with retry, duplicate protection and masked secrets.

pub mod app;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod demo;
pub mod engine;
pub mod http;
pub mod logging;
pub mod mask;
pub mod metrics;
pub mod model;
pub mod store;
pub mod ui;
