//! One module per subcommand; each is a thin layer over the crates. Also
//! the output formats every command shares, and the one table writer.

pub mod base;
pub mod build;
pub mod controller;
pub mod deploy;
pub mod dev;
pub mod gateway;
pub mod invoke;
pub mod list;
pub mod logs;
pub mod new;
pub mod sign;
pub mod store;
pub mod table;
pub mod token;
pub mod traffic;

/// How a command prints: the same set for base and fleet commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people (`text` is accepted too).
    #[default]
    #[value(alias = "text")]
    Table,
    /// For people, with more columns.
    Wide,
    /// For scripts: JSON on stdout (errors too, as `{"error": {...}}`).
    Json,
    /// For scripts: YAML on stdout.
    Yaml,
}

impl Output {
    /// Prints `value` as JSON or YAML and returns true, or returns false for
    /// the human formats (the caller then prints its own text).
    pub fn data(self, value: &impl serde::Serialize) -> bool {
        match self {
            Output::Json => print_json(value),
            Output::Yaml => print!(
                "{}",
                serde_yaml_ng::to_string(value).expect("serializable as YAML")
            ),
            Output::Table | Output::Wide => return false,
        }
        true
    }

    /// Whether this is a format for scripts (JSON or YAML).
    pub fn is_data(self) -> bool {
        matches!(self, Output::Json | Output::Yaml)
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

/// Formats a byte count for people: `512 B`, `101.5 KiB`, `16 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(103_915), "101.5 KiB");
        assert_eq!(human_bytes(16 << 20), "16 MiB");
        assert_eq!(human_bytes(3 << 30), "3 GiB");
    }
}
