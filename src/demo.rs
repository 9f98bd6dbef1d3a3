//! The `obmen demo` world (being written).
use std::path::Path;
pub async fn run(_dir: &Path, _port: u16) -> u8 {
    eprintln!("demo: being written");
    2
}
