//! IP lists: a 100k-CIDR deny file loads through the policy, and the prefix table agrees with
//! a naive scan on random lists and addresses.

use ip_network::IpNetwork;
use portcullis::decision::{CidrSet, parse_cidr};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

fn v4_cidr() -> impl Strategy<Value = (u32, u8)> {
    (any::<u32>(), 0u8..=32)
        .prop_map(|(raw, prefix)| (raw & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0), prefix))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn prefix_table_agrees_with_a_naive_scan(list in prop::collection::vec(v4_cidr(), 0..64), probes in prop::collection::vec(any::<u32>(), 1..64)) {
        let mut set = CidrSet::default();
        let mut nets: Vec<IpNetwork> = Vec::new();
        for (raw, prefix) in &list {
            let net = parse_cidr(&format!("{}/{prefix}", Ipv4Addr::from(*raw))).expect("valid");
            set.insert(net);
            nets.push(net);
        }
        // Probe both random addresses and addresses inside the listed networks.
        let inside = list.iter().map(|(raw, _)| *raw);
        for probe in probes.into_iter().chain(inside) {
            let ip = IpAddr::V4(Ipv4Addr::from(probe));
            let naive = nets.iter().any(|n| n.contains(ip));
            prop_assert_eq!(set.contains(ip), naive, "{}", ip);
        }
    }
}

#[test]
fn a_deny_file_of_100k_cidrs_loads_through_the_policy() {
    let dir = crate::support::scratch("ip-lists");
    let mut text = String::from("# 100k generated networks\n");
    for i in 0..100_000u32 {
        let raw = 0x0A00_0000u32.wrapping_add(i << 8);
        text.push_str(&format!("{}/24\n", Ipv4Addr::from(raw)));
    }
    let file = dir.join("blocklist.txt");
    std::fs::write(&file, text).expect("write");
    let policy = format!(
        "{}\nip: {{ deny_files: [{}] }}\n",
        crate::support::policy_with_ports("127.0.0.1:0", 0),
        file.display()
    );
    let settings = portcullis::config::parse_and_validate(&policy, &crate::support::corpus::fixtures()).expect("valid");
    let ip = &settings.snapshot.policy.ip;
    assert_eq!(ip.deny.len(), 100_000);
    assert!(ip.deny.contains("10.1.134.160".parse().expect("ip")));
    assert!(!ip.deny.contains("11.200.0.1".parse().expect("ip")));
    let _ = std::fs::remove_dir_all(&dir);
}
