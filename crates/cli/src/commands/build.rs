//! `berth build [PATH]`: build a module and check it like a base would.

use std::path::Path;

use anyhow::Result;

use crate::commands::{Output, print_json};
use crate::project::{Built, Project};

/// Builds the project in `dir` and reports the artifact.
pub fn run(dir: &Path, output: Output) -> Result<Built> {
    let project = Project::open(dir)?;
    let built = project.build(true)?;
    match output {
        Output::Json => print_json(&built),
        Output::Text => {
            println!(
                "built {}@{}",
                project.manifest.name, project.manifest.version
            );
            println!("  artifact  {}", built.artifact.display());
            println!("  size      {} bytes", built.size_bytes);
            println!("  digest    {}", built.digest);
            println!("  compile   {:.1} s", built.compile_time.as_secs_f64());
        }
    }
    Ok(built)
}
