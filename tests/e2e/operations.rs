//! Operating a running server in process: sessions listed and deleted, drain, and a
//! configuration reload that changes credentials without dropping allocations.

use crate::common::process::{ServerProcess, TempDir};
use crate::common::{
    PROCESS_WAIT, WAIT, client, client_with, code, config_toml, echo_peer, rest_credentials,
    start_server, start_server_raw,
};
use ferroturn::client::{ClientError, Relayed, TurnClient};
use ferroturn::config::RawConfig;
use ferroturn_core::server::SessionFilter;
use std::time::Duration;

#[tokio::test]
async fn sessions_are_listed_and_deleted_by_user() {
    let server = start_server("").await;
    let mut alice = client(&server, "alice").await;
    let mut bob = client(&server, "bob").await;
    let alice_relay = alice.allocate().await.unwrap();
    bob.allocate().await.unwrap();
    let peer = echo_peer().await;
    bob.channel_bind(0x4001, peer.addr).await.unwrap();

    let sessions = server.handle.sessions();
    assert_eq!(sessions.len(), 2);
    let a = sessions
        .iter()
        .find(|s| s.user == "alice")
        .expect("alice listed");
    assert_eq!(a.relayed, alice_relay);
    assert_eq!(a.client, alice.local_addr().unwrap());

    assert_eq!(
        server
            .handle
            .delete_sessions(SessionFilter::User("alice".into())),
        1
    );
    assert_eq!(
        code(alice.refresh(600).await),
        437,
        "alice's allocation is gone"
    );
    bob.send_channel_data(0x4001, b"still here").await.unwrap();
    assert!(matches!(
        bob.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel { .. })
    ));
    assert_eq!(server.handle.sessions().len(), 1);
}

#[tokio::test]
async fn a_draining_server_refuses_new_allocations_and_keeps_the_old_ones() {
    let server = start_server("").await;
    let mut old = client(&server, "old").await;
    old.allocate().await.unwrap();
    assert!(server.handle.is_ready());
    server.handle.set_draining(true);
    assert!(!server.handle.is_ready(), "not ready at once");
    let mut new = client(&server, "new").await;
    assert_eq!(code(new.allocate().await), 508);
    assert_eq!(
        old.refresh(600).await.unwrap(),
        600,
        "existing allocations run on"
    );
    server.handle.set_draining(false);
    assert!(server.handle.is_ready());
    new.allocate()
        .await
        .expect("allocations again after the drain ends");
}

#[tokio::test]
async fn reload_changes_credentials_without_dropping_allocations() {
    let dir = TempDir::new("reload");
    let file = dir.join("turnserver.toml");
    let base = config_toml;
    let first = base("secret-one", "");
    std::fs::write(&file, &first).unwrap();
    let server = start_server_raw(&first).await;
    server
        .handle
        .set_config_source(file.clone(), RawConfig::default());

    let peer = echo_peer().await;
    let mut old = client_with(&server, "secret-one", "carol").await;
    old.allocate().await.unwrap();
    old.channel_bind(0x4002, peer.addr).await.unwrap();

    std::fs::write(&file, base("secret-two", "user = [\"dave:dave-pw\"]\n")).unwrap();
    let report = server.handle.reload().expect("valid configuration reloads");
    assert!(report.needs_restart.is_empty(), "{report:?}");

    // The allocation made under the old secret keeps relaying and refreshing.
    old.send_channel_data(0x4002, b"after reload")
        .await
        .unwrap();
    assert!(matches!(
        old.recv_relayed(WAIT).await.unwrap(),
        Some(Relayed::Channel { .. })
    ));
    // New credentials work, removed ones fail.
    client_with(&server, "secret-two", "erin")
        .await
        .allocate()
        .await
        .expect("new secret");
    let mut dave = TurnClient::new(server.addr, "dave", "dave-pw")
        .await
        .unwrap();
    dave.allocate().await.expect("new static user");
    assert_eq!(
        code(
            client_with(&server, "secret-one", "frank")
                .await
                .allocate()
                .await
        ),
        401
    );

    // An invalid file is refused as a whole; the running configuration stays.
    std::fs::write(
        &file,
        base(
            "secret-three",
            "min-port = 9\nmax-port = 1\nno-such-key = 1\n",
        ),
    )
    .unwrap();
    let err = server
        .handle
        .reload()
        .expect_err("invalid configuration refused");
    assert!(
        matches!(err, ferroturn::ReloadError::Config(_)),
        "refused as configuration: {err}"
    );
    let err = err.to_string();
    assert!(
        err.contains("no-such-key") || err.contains("min-port"),
        "{err}"
    );
    client_with(&server, "secret-two", "gina")
        .await
        .allocate()
        .await
        .expect("old config serves");
    assert_eq!(
        code(
            client_with(&server, "secret-three", "hal")
                .await
                .allocate()
                .await
        ),
        401
    );
    let m = server.handle.metrics();
    assert_eq!((m.reloads_ok, m.reloads_failed), (1, 1));

    // A listener change is reported as needing a restart, not silently ignored.
    std::fs::write(&file, base("secret-two", "listening-port = 3999")).unwrap();
    let report = server.handle.reload().unwrap();
    assert!(
        report.needs_restart.contains(&"listening-ip/ports"),
        "{report:?}"
    );
}

#[tokio::test]
async fn draining_with_an_alternate_server_redirects_new_allocations() {
    let server = start_server("alternate-server = \"192.0.2.7:3478\"").await;
    server.handle.set_draining(true);
    let mut c = client(&server, "ivy").await;
    assert_eq!(code(c.allocate().await), 300, "300 Try Alternate");
}

#[tokio::test]
async fn drain_waits_for_the_last_allocation_or_the_timeout() {
    let server = start_server("drain-timeout = 20").await;
    let mut c = client(&server, "jay").await;
    c.allocate().await.unwrap();
    let control = server.handle.control();
    let waiting = tokio::task::spawn_blocking(move || control.drain_and_wait());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "an allocation is still open");
    c.refresh(0).await.unwrap();
    let open = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("drain ends soon after the last allocation")
        .unwrap();
    assert_eq!(open, 0);

    let server = start_server("drain-timeout = 1").await;
    let mut c = client(&server, "kim").await;
    c.allocate().await.unwrap();
    let control = server.handle.control();
    let open = tokio::time::timeout(
        Duration::from_secs(6),
        tokio::task::spawn_blocking(move || control.drain_and_wait()),
    )
    .await
    .expect("the timeout ends the drain")
    .unwrap();
    assert_eq!(open, 1, "the allocation outlived the drain timeout");
}

/// The binary: SIGHUP re-reads the file (a new secret works, the old allocation keeps
/// running), SIGTERM drains (the process waits for the last allocation, then exits 0).
#[tokio::test]
async fn the_binary_reloads_on_sighup_and_drains_on_sigterm() {
    let dir = TempDir::new("signals");
    let file = dir.join("turnserver.toml");
    let conf = |secret: &str| config_toml(secret, "relay-threads = 1\ndrain-timeout = 20");
    std::fs::write(&file, conf("before")).unwrap();
    let ServerProcess {
        child: mut server,
        addr,
        ..
    } = ServerProcess::start(&["--config".as_ref(), file.as_os_str()], PROCESS_WAIT);
    let client = |secret: &'static str, user: &'static str| async move {
        let (u, p) = rest_credentials(secret, user, Duration::from_secs(600));
        TurnClient::new(addr, &u, &p).await.unwrap()
    };
    let mut old = client("before", "lee").await;
    old.allocate().await.unwrap();

    std::fs::write(&file, conf("after")).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if client("after", "mo").await.allocate().await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new secret never worked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code(client("before", "ned").await.allocate().await), 401);
    assert_eq!(
        old.refresh(600).await.unwrap(),
        600,
        "allocations survive the reload"
    );

    // Allocations are open (lee's, mo's): SIGTERM drains and waits for them.
    server.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        server.exited().is_none(),
        "draining while allocations remain"
    );
    // The drain has begun once the signal is handled: a new allocation is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = client("after", "oz").await;
        match c.allocate().await {
            Err(ClientError::Error(508)) => break,
            Ok(_) => {
                c.refresh(0).await.unwrap();
            }
            other => panic!("expected 508, got {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new allocations are still accepted while draining"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(old.refresh(600).await.unwrap(), 600, "existing ones run on");
    // A second SIGTERM ends the drain at once.
    server.signal(libc::SIGTERM);
    let status = server
        .exit_within(Duration::from_secs(5))
        .await
        .expect("did not exit");
    assert!(status.success(), "{status:?}");
}
