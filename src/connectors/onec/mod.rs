//! 1C:Enterprise connectors (`kind = "onec"`).

pub mod commerceml;
pub mod odata;

pub use odata::OnecConnector;
