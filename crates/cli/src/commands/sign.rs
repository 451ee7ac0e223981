//! `berth sign`: ed25519 signing keys and detached artifact signatures
//! (formats in [`berth_runtime::signature`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// `berth sign ARTIFACT --key KEY` or `berth sign --generate-key PATH`.
pub fn run(
    artifact: Option<PathBuf>,
    key: Option<PathBuf>,
    generate_key: Option<PathBuf>,
) -> Result<()> {
    if let Some(path) = generate_key {
        return generate(&path);
    }
    let (Some(artifact), Some(key)) = (artifact, key) else {
        bail!("give the artifact and the key: `berth sign FILE.wasm --key KEYFILE`");
    };
    let key_text = std::fs::read_to_string(&key)
        .with_context(|| format!("cannot read the signing key {}", key.display()))?;
    let bytes = std::fs::read(&artifact)
        .with_context(|| format!("cannot read the artifact {}", artifact.display()))?;
    let digest = berth_runtime::Digest::of(&bytes);
    let signature = berth_runtime::signature::sign(&digest, &key_text)
        .with_context(|| format!("cannot sign with {}", key.display()))?;
    let sig_path = sig_path(&artifact);
    std::fs::write(&sig_path, signature)
        .with_context(|| format!("cannot write {}", sig_path.display()))?;
    println!("signed {digest}");
    println!("  signature {}", sig_path.display());
    Ok(())
}

/// `ARTIFACT.sig`.
fn sig_path(artifact: &Path) -> PathBuf {
    let mut path = artifact.as_os_str().to_owned();
    path.push(".sig");
    PathBuf::from(path)
}

fn generate(path: &Path) -> Result<()> {
    let (secret, public) = berth_runtime::signature::generate_key()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    file.write_all(secret.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let public_path = {
        let mut p = path.as_os_str().to_owned();
        p.push(".pub");
        PathBuf::from(p)
    };
    std::fs::write(&public_path, &public)
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    println!("signing key {} (keep it secret; mode 0600)", path.display());
    println!("public key  {}: {}", public_path.display(), public.trim());
    println!(
        "next: berth sign FILE.wasm --key {}; start bases with --trust-key {}",
        path.display(),
        public_path.display()
    );
    Ok(())
}
