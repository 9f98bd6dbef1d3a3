//! 1C:Enterprise connectors (`kind = "onec"`).

pub mod odata;

pub use odata::OnecConnector;
