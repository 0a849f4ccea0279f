//! A minimal `sd_notify(3)`: tells a supervising systemd (`Type=notify`) that the node
//! is ready (`READY=1`) or stopping (`STOPPING=1`), through the datagram socket whose
//! address systemd puts in `NOTIFY_SOCKET`.
//!
//! When the variable is unset or empty (not started by systemd, or not as
//! `Type=notify`), nothing is sent and nothing fails. Standard library only, no
//! `unsafe`: the socket is a [`UnixDatagram`], and Linux abstract addresses (written with
//! a leading `@`) go through [`std::os::linux::net::SocketAddrExt`].

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// The environment variable that names systemd's notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// The message that tells systemd the service is ready (send it after the ready line).
pub const READY: &str = "READY=1";

/// The message that tells systemd the service is shutting down.
pub const STOPPING: &str = "STOPPING=1";

/// Sends `state` (one or more newline-separated `KEY=VALUE` assignments, such as
/// [`READY`] or [`STOPPING`]) to the socket named by `NOTIFY_SOCKET`.
///
/// Returns `Ok(false)` when `NOTIFY_SOCKET` is unset or empty (nothing to notify),
/// `Ok(true)` once the datagram is sent, and an error when the address is invalid or
/// the send fails. Callers should log an error and carry on: a failed notification
/// must not stop the node.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET_ENV) {
        Some(socket) if !socket.is_empty() => {
            notify_to(&socket, state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sends `state` as one datagram to `socket`, an address in `NOTIFY_SOCKET`'s syntax:
/// an absolute filesystem path, or (Linux only) an abstract socket name written with a
/// leading `@`.
///
/// Any other form (a relative path, systemd's `vsock:` addresses) is an
/// [`io::ErrorKind::InvalidInput`] or [`io::ErrorKind::Unsupported`] error.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let bytes = socket.as_bytes();
    let sock = UnixDatagram::unbound()?;
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        send_abstract(&sock, name, state.as_bytes())?
    } else if bytes.starts_with(b"/") {
        sock.send_to(state.as_bytes(), Path::new(socket))?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET must be an absolute path or an abstract name starting with '@'",
        ));
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "notification truncated: sent {sent} of {} bytes",
                state.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], message: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;

    let addr = SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(message, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _message: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract NOTIFY_SOCKET addresses ('@…') exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(listener: &UnixDatagram) -> Vec<u8> {
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn sends_ready_and_stopping_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();

        notify_to(path.as_os_str(), READY).unwrap();
        assert_eq!(receive(&listener), b"READY=1");

        notify_to(path.as_os_str(), STOPPING).unwrap();
        assert_eq!(receive(&listener), b"STOPPING=1");

        notify_to(path.as_os_str(), "STATUS=serving\nREADY=1").unwrap();
        assert_eq!(receive(&listener), b"STATUS=serving\nREADY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;

        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("ghmesh-notify-test-{}-{nanos}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();

        notify_to(OsStr::new(&format!("@{name}")), READY).unwrap();
        assert_eq!(receive(&listener), b"READY=1");
    }

    #[test]
    fn rejects_relative_addresses_and_reports_missing_sockets() {
        let err = notify_to(OsStr::new("relative/notify.sock"), READY).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.sock");
        assert!(notify_to(missing.as_os_str(), READY).is_err());
    }
}
