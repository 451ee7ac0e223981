//! `berth store copy`: the controller's whole state from one store into
//! another ([`berth_controller::copy`]), with progress.

use anyhow::{Context as _, Result};
use berth_controller::start::{StoreSpec, open_store};

/// `berth store copy --from FROM --to TO [--force]`.
pub async fn copy(from: StoreSpec, to: StoreSpec, force: bool) -> Result<()> {
    if from == to {
        anyhow::bail!("--from and --to are the same store ({from}); name two different stores");
    }
    tokio::task::spawn_blocking(move || {
        let open = |spec: &StoreSpec, flag: &str| {
            open_store(spec).with_context(|| {
                format!("cannot open {flag} {spec}\nhint: stop the controllers that use it first (a redb file has one user at a time)")
            })
        };
        let source = open(&from, "--from")?;
        let target = open(&to, "--to")?;
        println!("copying {from} → {to}");
        let step = std::cell::Cell::new(0);
        let copied = berth_controller::copy::copy(&*source, &*target, force, |done, total| {
            // About ten lines, whatever the size.
            let every = (total / 10).max(1);
            if done == total || done >= step.get() + every {
                step.set(done);
                println!("  {done}/{total} keys");
            }
        })
        .with_context(|| format!("cannot copy {from} → {to}"))?;
        if copied.replaced > 0 {
            println!("  replaced {} key(s) that were in {to}", copied.replaced);
        }
        println!(
            "copied {} key(s), {} base lease(s) granted anew; start the controllers on {to}",
            copied.keys, copied.leases
        );
        Ok(())
    })
    .await?
}
