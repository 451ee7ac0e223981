//! `berth build [PATH]`: build a module and check it like a base would.

use std::path::Path;

use anyhow::Result;

use crate::commands::{Output, human_bytes};
use crate::project::{Built, Project};

/// Builds the project in `dir` and reports the artifact.
pub fn run(dir: &Path, output: Output) -> Result<Built> {
    let project = Project::open(dir)?;
    let built = project.build(true)?;
    match output {
        Output::Json | Output::Yaml => {
            output.data(&built);
        }
        Output::Table | Output::Wide => {
            println!(
                "built {}@{}",
                project.manifest.name, project.manifest.version
            );
            println!("  artifact  {}", built.artifact.display());
            println!("  size      {}", human_bytes(built.size_bytes));
            println!("  digest    {}", built.digest);
            println!("  compile   {:.1} s", built.compile_time.as_secs_f64());
        }
    }
    Ok(built)
}
