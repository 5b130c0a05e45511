//! Where a running `workflow serve` listens: it writes its address into its
//! data directory ([`ADDRESS_FILE`]) once it listens, and removes it when it
//! stops. A command that finds the directory held by another process reads
//! the file to talk to that server ([`find_server`]), instead of guessing.
//!
//! The file is only a pointer: the data directory's lock says whether a
//! process holds the directory. A file left by a server that crashed is
//! recognized by its process id (on Linux) and reported, never followed;
//! `workflow serve` removes such a file when it takes the lock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// The address file's name in the data directory.
pub const ADDRESS_FILE: &str = "server.json";

/// How long a command waits for a server that holds the directory to write
/// its address (it does so right after it starts listening).
pub const STARTUP_WAIT: Duration = Duration::from_secs(2);

/// The contents of [`ADDRESS_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAddress {
    /// The base URL to reach the server from this machine,
    /// `http://127.0.0.1:3917`: a wildcard listening address (`0.0.0.0`,
    /// `[::]`) is replaced by the loopback address of its family.
    pub url: String,
    /// The address the server listens on, as bound (`0.0.0.0:3917`).
    pub addr: String,
    /// The server's process id.
    pub pid: u32,
}

impl ServerAddress {
    /// The address of this process, listening on `local`.
    pub fn of_this_process(local: SocketAddr) -> Self {
        let reach = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), local.port())
            }
            _ => local,
        };
        ServerAddress {
            url: format!("http://{reach}"),
            addr: local.to_string(),
            pid: std::process::id(),
        }
    }
}

/// The path of the address file in `data`.
pub fn address_path(data: &Path) -> PathBuf {
    data.join(ADDRESS_FILE)
}

/// The address file of this running server; removed when dropped (when the
/// server stops, or fails after writing it).
#[derive(Debug)]
pub struct AddressFile {
    path: PathBuf,
}

impl AddressFile {
    /// Writes `address` into `data` atomically (a temporary file renamed over
    /// it), so that a reader sees the whole file or none.
    pub fn write(data: &Path, address: &ServerAddress) -> Result<AddressFile, CliError> {
        let path = address_path(data);
        let fail = |e: &dyn std::fmt::Display| CliError::AddressFile {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let text = serde_json::to_vec_pretty(address).map_err(|e| fail(&e))?;
        let tmp = data.join(format!(".{ADDRESS_FILE}.{}.tmp", address.pid));
        let written = (|| {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(&e));
        }
        Ok(AddressFile { path })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AddressFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the server address file");
            }
        }
    }
}

/// Removes an address file left in `data` by a server that did not stop
/// cleanly. Call it only while holding the directory's lock: then no server
/// runs on it.
pub fn remove_stale(data: &Path) {
    let path = address_path(data);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed the address file of a server that did not stop cleanly")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale server address file")
        }
    }
}

/// Whether process `pid` runs, where this can be told (Linux); `None` elsewhere.
fn process_alive(pid: u32) -> Option<bool> {
    if cfg!(target_os = "linux") {
        Some(Path::new("/proc").join(pid.to_string()).exists())
    } else {
        None
    }
}

/// The server that holds `data`, which the caller found locked: the address
/// its [`ADDRESS_FILE`] names. Waits up to `wait` for a server that is
/// starting to write it. A missing, unreadable or stale file is an error that
/// says so, never a default address.
pub async fn find_server(data: &Path, wait: Duration) -> Result<ServerAddress, CliError> {
    let path = address_path(data);
    let no_server = |message: String| CliError::NoServer {
        path: data.display().to_string(),
        message,
    };
    let deadline = Instant::now() + wait;
    loop {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let address: ServerAddress = serde_json::from_slice(&bytes).map_err(|e| {
                    no_server(format!(
                        "its address file {} is not valid: {e}",
                        path.display()
                    ))
                })?;
                if process_alive(address.pid) == Some(false) {
                    return Err(no_server(format!(
                        "its address file {} is stale: it names process {}, which is not running",
                        path.display(),
                        address.pid
                    )));
                }
                return Ok(address);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if Instant::now() >= deadline {
                    return Err(no_server(format!(
                        "it has no address file ({ADDRESS_FILE}): the process holding it is not a running `workflow serve`"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(no_server(format!(
                    "its address file {} cannot be read: {e}",
                    path.display()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_reached_on_loopback() {
        let a = ServerAddress::of_this_process("0.0.0.0:3917".parse().expect("addr"));
        assert_eq!(a.url, "http://127.0.0.1:3917");
        assert_eq!(a.addr, "0.0.0.0:3917");
        assert_eq!(a.pid, std::process::id());
        let a = ServerAddress::of_this_process("[::]:80".parse().expect("addr"));
        assert_eq!(a.url, "http://[::1]:80");
        let a = ServerAddress::of_this_process("10.1.2.3:8080".parse().expect("addr"));
        assert_eq!(a.url, "http://10.1.2.3:8080");
    }

    #[tokio::test]
    async fn the_file_is_written_read_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let address = ServerAddress::of_this_process("127.0.0.1:4000".parse().expect("addr"));
        let file = AddressFile::write(dir.path(), &address).expect("write");
        assert_eq!(
            find_server(dir.path(), Duration::ZERO).await.ok(),
            Some(address)
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, [ADDRESS_FILE], "no temporary file is left");
        drop(file);
        assert!(!address_path(dir.path()).exists());
        let err = find_server(dir.path(), Duration::from_millis(100))
            .await
            .expect_err("no file");
        assert!(err.to_string().contains("no address file"), "{err}");
    }

    #[tokio::test]
    async fn malformed_and_stale_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(address_path(dir.path()), "{").expect("write");
        let err = find_server(dir.path(), Duration::ZERO)
            .await
            .expect_err("malformed");
        assert!(err.to_string().contains("not valid"), "{err}");
        if cfg!(target_os = "linux") {
            let mut child = std::process::Command::new("true").spawn().expect("spawn");
            let pid = child.id();
            child.wait().expect("wait");
            let stale = ServerAddress {
                url: "http://127.0.0.1:1".into(),
                addr: "127.0.0.1:1".into(),
                pid,
            };
            std::fs::write(
                address_path(dir.path()),
                serde_json::to_vec(&stale).expect("json"),
            )
            .expect("write");
            let err = find_server(dir.path(), Duration::ZERO)
                .await
                .expect_err("stale");
            assert!(err.to_string().contains("stale"), "{err}");
        }
        remove_stale(dir.path());
        assert!(!address_path(dir.path()).exists());
    }
}
