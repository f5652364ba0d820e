//! Client IP and static IP lists (docs/contract.md steps 2 and 3).

use super::reason::{Deny, DenyReason};
use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use std::net::IpAddr;
use std::str::FromStr;

/// A set of CIDRs with longest-prefix lookup.
#[derive(Default)]
pub struct CidrSet {
    table: IpNetworkTable<()>,
    len: usize,
}

impl std::fmt::Debug for CidrSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CidrSet({} networks)", self.len)
    }
}

impl Clone for CidrSet {
    fn clone(&self) -> Self {
        let mut table = IpNetworkTable::new();
        for (net, _) in self.table.iter() {
            table.insert(net, ());
        }
        Self { table, len: self.len }
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128). Host bits must be
/// zero, so a typo like `10.0.0.1/8` is an error, not a silent widening. The result is
/// canonical, as client addresses are: an IPv4-mapped address or network (`::ffff:10.7.7.7`,
/// `::ffff:10.8.0.0/112`) is its IPv4 network, which is what it must match.
pub fn parse_cidr(text: &str) -> Result<IpNetwork, String> {
    let text = text.trim();
    let net = match text.parse::<IpAddr>() {
        Ok(ip) => IpNetwork::from(ip),
        Err(_) => IpNetwork::from_str(text).map_err(|e| format!("\"{text}\" is not a CIDR ({e})"))?,
    };
    Ok(canonical_network(net))
}

/// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it maps.
fn canonical_network(net: IpNetwork) -> IpNetwork {
    if let IpNetwork::V6(v6) = net
        && v6.netmask() >= 96
        && let Some(v4) = v6.network_address().to_ipv4_mapped()
        && let Ok(mapped) = ip_network::Ipv4Network::new(v4, v6.netmask() - 96)
    {
        return IpNetwork::V4(mapped);
    }
    net
}

impl CidrSet {
    pub fn insert(&mut self, net: IpNetwork) {
        if self.table.insert(net, ()).is_none() {
            self.len += 1;
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.table.longest_match(ip.to_canonical()).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lines of a CIDR file: one CIDR or address a line, `#` starts a comment. Errors name the line.
    pub fn extend_from_lines(&mut self, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            self.insert(parse_cidr(line).map_err(|e| format!("line {}: {e}", n + 1))?);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct IpPolicy {
    /// Non-empty: only these pass.
    pub allow: CidrSet,
    pub deny: CidrSet,
    /// Proxies whose `x-forwarded-for` is believed; never counted, blocked or limited. A proxy
    /// that forwards no client is itself the client for `allow`.
    pub trusted: CidrSet,
    /// `ip.allow_trusted_proxies: true`: a trusted proxy forwarding no client passes `allow`.
    pub allow_trusted_proxies: bool,
    pub auto_block: Option<AutoBlock>,
}

/// Block a client after `failures` invalid credentials within `window_secs`, for `block_for_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoBlock {
    pub failures: u32,
    pub window_secs: i64,
    pub block_for_secs: i64,
}

/// The client behind the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp {
    pub addr: IpAddr,
    /// A trusted proxy itself (every hop trusted): exempt from lists, blocks and limits.
    pub trusted: bool,
}

/// One `x-forwarded-for` hop as proxies write it: `ip`, `ip:port` (Azure Application Gateway),
/// `[v6]` or `[v6]:port`, optionally in quotes; IPv4-mapped IPv6 addresses as IPv4.
pub fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    let ip = if let Some(rest) = hop.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        IpAddr::V6(inside.parse().ok()?)
    } else if let Some((v4, port)) = hop.split_once(':').filter(|(_, rest)| !rest.contains(':')) {
        if !port_ok(port) {
            return None;
        }
        IpAddr::V4(v4.parse().ok()?)
    } else {
        hop.parse().ok()?
    };
    Some(ip.to_canonical())
}

/// The client address: the peer, unless the peer is a trusted proxy; then `x-forwarded-for` is
/// walked right to left skipping trusted entries, and the first untrusted one is the client.
/// Every address is canonical (`::ffff:203.0.113.7` is `203.0.113.7`) before trust, lists and
/// keys. A hop that cannot be parsed behind a trusted proxy is refused (`Err`): it never makes a
/// request trusted, and guessing whom to count would let one client be blamed for another.
pub fn client_ip(peer: IpAddr, xff: &[&str], trusted: &CidrSet) -> Result<ClientIp, Deny> {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return Ok(ClientIp { addr: peer, trusted: false });
    }
    let hops = xff.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|h| !h.is_empty());
    for hop in hops.rev() {
        match parse_hop(hop) {
            Some(ip) if trusted.contains(ip) => continue,
            Some(ip) => return Ok(ClientIp { addr: ip, trusted: false }),
            None => {
                return Err(Deny::new(
                    DenyReason::InvalidRequest,
                    "x-forwarded-for from a trusted proxy holds a hop that is not an address",
                ));
            }
        }
    }
    Ok(ClientIp { addr: peer, trusted: true })
}

/// The key a client is counted and limited under: IPv4 address, or the IPv6 /64.
pub fn client_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}
