//! Listener addresses: TCP `host:port` or `unix:/path`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    pub fn parse(s: &str, allow_unix: bool) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !allow_unix {
                return Err("a unix socket is not supported for this listener".into());
            }
            if !path.starts_with('/') {
                return Err(format!("unix socket path must be absolute, got \"{path}\""));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|_| format!("\"{s}\" is not host:port (an IP address and a port) or unix:/path"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}
