//! The agent's end: a ZDS socket that only root can connect to.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::sync::Mutex;
use tokio_seqpacket::UnixSeqpacketListener;

use super::{ZdsConnection, ZdsError};

#[derive(Debug)]
pub struct ZdsListener {
    // tokio-seqpacket's accept needs `&mut`; the mutex lets `accept` take
    // `&self` like the rest of the API.
    inner: Mutex<UnixSeqpacketListener>,
    path: PathBuf,
}

impl ZdsListener {
    /// Binds `path` with mode 0600, creating its directory and replacing a
    /// stale socket left by a previous agent. Anything else at `path` that is
    /// not a socket is an error, never deleted.
    pub fn bind(path: &Path) -> Result<Self, ZdsError> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let Some(file_name) = path.file_name() else {
            return Err(ZdsError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: not a socket file path", path.display()),
            )));
        };
        std::fs::create_dir_all(&dir)?;
        remove_stale_socket(path)?;
        // Bind under a temporary name, restrict it, then rename into place,
        // so the socket is never reachable at `path` with looser permissions
        // (umask is process-wide, so it cannot be narrowed just for this).
        let tmp = dir.join(format!(
            ".{}.{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        remove_stale_socket(&tmp)?;
        let listener = UnixSeqpacketListener::bind(&tmp)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(err) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(err.into());
        }
        Ok(Self {
            inner: Mutex::new(listener),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn accept(&self) -> Result<ZdsConnection, ZdsError> {
        let socket = self.inner.lock().await.accept().await?;
        Ok(ZdsConnection::from(socket))
    }
}

fn remove_stale_socket(path: &Path) -> Result<(), ZdsError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(std::fs::remove_file(path)?),
        Ok(_) => Err(ZdsError::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use tokio::time::timeout;

    use super::*;
    use crate::zds::proto::{Version, ZdsHello};

    const T: Duration = Duration::from_secs(5);

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("amesh-zds-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn bind_replaces_stale_socket_with_private_one() {
        let dir = temp_dir("bind");
        let path = dir.join("sub").join("zds.sock");
        let first = ZdsListener::bind(&path).unwrap();
        drop(first);
        // The file is still there (a crashed agent leaves it); bind again.
        assert!(path.exists());
        let listener = ZdsListener::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let client = tokio::spawn({
            let path = path.clone();
            async move {
                let conn = ZdsConnection::connect(&path).await.unwrap();
                let hello = ZdsHello {
                    version: Version::V1 as i32,
                };
                conn.send(&hello, None).await.unwrap();
                conn
            }
        });
        let server = timeout(T, listener.accept()).await.unwrap().unwrap();
        let (hello, _) = timeout(T, server.recv::<ZdsHello>())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hello.version(), Version::V1);
        drop(client.await.unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bind_refuses_to_delete_a_regular_file() {
        let dir = temp_dir("file");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("zds.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        let err = ZdsListener::bind(&path).unwrap_err();
        assert!(
            matches!(err, ZdsError::Io(ref e) if e.kind() == std::io::ErrorKind::AlreadyExists)
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
