//! One module per subcommand; each is a thin layer over the crates.

pub mod base;
pub mod build;
pub mod controller;
pub mod deploy;
pub mod dev;
pub mod invoke;
pub mod list;
pub mod logs;
pub mod new;
pub mod traffic;

/// How data is printed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}
