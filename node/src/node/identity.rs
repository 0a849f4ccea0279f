//! The node's files: its peer identity and its private data dir.

use std::path::Path;

use libp2p::identity;

use super::NodeError;

/// Loads the peer identity from `path`, or creates one (file mode 0600).
pub fn load_or_create_identity(path: &Path) -> Result<identity::Keypair, NodeError> {
    let err = |detail: String| NodeError::Identity {
        path: path.display().to_string(),
        detail,
    };
    match std::fs::read(path) {
        Ok(bytes) => identity::Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            err(format!(
                "unreadable ({e}); move it aside to get a new peer id"
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = identity::Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(e.to_string()))?;
            write_private(path, &bytes).map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Writes a file readable only by us, atomically (temp file + rename), so that a crash
/// mid-write never leaves a truncated identity behind.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Makes the data dir private: created 0700 when missing; an existing one of ours is
/// set to 0700 (with one warning) when others could read it; one owned by someone else
/// is refused, since its owner could read or replace our identity and cache.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let data_dir_err = |source| NodeError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    if let Ok(meta) = std::fs::metadata(dir) {
        if !meta.is_dir() {
            return Err(data_dir_err(std::io::Error::other("it is not a directory")));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(NodeError::DataDirOwner {
                path: dir.display().to_string(),
                owner: meta.uid(),
            });
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(data_dir_err)?;
            tracing::warn!(
                path = %dir.display(),
                "the data dir was open to other users (mode {mode:o}); set it to 0700"
            );
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| NodeError::DataDir {
            path: dir.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn identity_is_kept_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d");
        create_private_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let path = data.join("identity.key");
        let a = load_or_create_identity(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create_identity(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        std::fs::write(&path, b"garbage").unwrap();
        let err = load_or_create_identity(&path).unwrap_err().to_string();
        assert!(err.contains("move it aside"), "{err}");
    }
}
