//! The service's identity key: kept in a file, since the onion address is derived from it.

use std::path::Path;

use crate::crypto::keyfile::{read_key_file, write_key_file, KeyType};
use crate::crypto::{IdentityKeypair, KeyFileError};

use super::ServiceError;

/// Loads the service identity from `path`, or generates one and writes it (mode 0600,
/// atomically) if the file does not exist. Any other problem is an error: silently
/// replacing the key would change the service's address.
pub fn load_or_create_service_key(path: &Path) -> Result<IdentityKeypair, ServiceError> {
    match read_key_file(path, KeyType::Identity) {
        Ok(secret) => Ok(IdentityKeypair::from_secret_bytes(&secret)),
        Err(KeyFileError::Missing { .. }) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| ServiceError::Config(format!("{}: {e}", dir.display())))?;
            }
            let kp = IdentityKeypair::generate(&mut rand::rng());
            write_key_file(path, KeyType::Identity, &kp.secret_bytes())?;
            Ok(kp)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_key_file_is_created_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("allium-svc-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("svc.key");
        let a = load_or_create_service_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create_service_key(&path).unwrap();
        assert_eq!(a.public(), b.public());
        // A damaged file is an error, never silently replaced (the address would change).
        std::fs::write(&path, b"garbage").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create_service_key(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
