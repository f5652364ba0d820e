//! IP list lookup: a deny list of 100k CIDRs (mixed IPv4 /8–/32 and IPv6 /32–/128), looked up
//! for random addresses. Run: `cargo bench --bench ip_lookup`.

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::decision::{CidrSet, parse_cidr};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn random_list(n: usize, rng: &mut StdRng) -> String {
    let mut out = String::new();
    for _ in 0..n {
        if rng.random_bool(0.8) {
            let prefix = rng.random_range(8..=32u32);
            let raw: u32 = rng.random::<u32>() & (u32::MAX.checked_shl(32 - prefix).unwrap_or(0));
            out.push_str(&format!("{}/{prefix}\n", Ipv4Addr::from(raw)));
        } else {
            let prefix = rng.random_range(32..=128u32);
            let raw: u128 = rng.random::<u128>() & (u128::MAX.checked_shl(128 - prefix).unwrap_or(0));
            out.push_str(&format!("{}/{prefix}\n", Ipv6Addr::from(raw)));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let text = random_list(100_000, &mut rng);
    let mut set = CidrSet::default();
    set.extend_from_lines(&text).expect("list");
    let probes: Vec<IpAddr> = (0..1024)
        .map(|i| {
            if i % 5 == 0 {
                IpAddr::V6(Ipv6Addr::from(rng.random::<u128>()))
            } else {
                IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()))
            }
        })
        .collect();
    let mut i = 0usize;
    c.bench_function("deny list of 100k CIDRs: contains(ip)", |b| {
        b.iter(|| {
            i = (i + 1) % probes.len();
            black_box(set.contains(black_box(probes[i])))
        })
    });
    assert!(parse_cidr("10.0.0.0/8").is_ok());
}

criterion_group!(benches, bench);
criterion_main!(benches);
