//! Many clients behind one address (a carrier-grade or office NAT): 2000 clients on
//! 127.0.0.1, each on its own port, set up an allocation the way a new client does (an
//! Allocate without credentials, the 401, the Allocate signed with its nonce), with the
//! default limits on unauthenticated answers. Their challenges are paid for by the
//! credit the address earns with the signed requests (`server/limiter.rs`), so none is
//! refused; under `unauthenticated-rate` alone the address would get 50 a second.

use crate::common::{client, published_metrics, start_server};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test]
async fn two_thousand_clients_from_one_address_all_get_allocations() {
    const CLIENTS: usize = 2000;
    const CONCURRENT: usize = 32;
    // Two relay threads whatever the machine: each answers half of the address's
    // `unauthenticated-rate`, in bursts of 50, which the first 32 challenges fit in.
    let server = start_server("relay-threads = 2").await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let (mut started, mut ok, mut failed) = (0, 0, Vec::new());
    while ok + failed.len() < CLIENTS {
        assert!(Instant::now() < deadline, "{ok} allocated by the deadline");
        while started < CLIENTS && tasks.len() < CONCURRENT {
            let mut c = client(&server, &format!("user{started}")).await;
            tasks.spawn(async move {
                c.allocate().await?;
                c.refresh(0).await
            });
            started += 1;
        }
        match tasks.join_next().await {
            Some(Ok(Ok(_))) => ok += 1,
            Some(Ok(Err(e))) => failed.push(e.to_string()),
            Some(Err(e)) => failed.push(e.to_string()),
            None => break,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        failed.is_empty(),
        "{} of {CLIENTS} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(ok, CLIENTS);
    let m = published_metrics(&server, "every allocation counted", |m| {
        m.stats.allocations_deleted >= CLIENTS as u64
    })
    .await;
    let s = &m.stats;
    println!(
        "{CLIENTS} clients from 127.0.0.1 in {elapsed:.1} s ({:.0} setups/s): {} challenges \
         paid by credit, {} refused, {} refused by the budget",
        CLIENTS as f64 / elapsed,
        s.unauthenticated_credited,
        s.rate_limited,
        s.rate_limited_total
    );
    assert_eq!(s.allocations_created, CLIENTS as u64);
    assert_eq!(s.rate_limited, 0, "no answer was withheld");
    // Every client was challenged once at least; the address's buckets (bursts of 100
    // and 50 a second for both threads) paid for the rest.
    let from_buckets = 100.0 + 50.0 * elapsed;
    assert!(
        s.unauthenticated_credited as f64 >= CLIENTS as f64 - from_buckets,
        "only {} challenges paid by credit",
        s.unauthenticated_credited
    );
}
