//! Secrets and passwords never reach a log line, even at TRACE (the usage webhook's
//! secret included), while authentication failures, allocations and their usage records
//! are logged. The test installs the process's global log
//! subscriber, so it runs alone in a child process.

use crate::common::process::{alone, run_alone};
use crate::common::webhook::{HOOK_SECRET, Receiver, hook_toml};
use crate::common::{SECRET, client, echo_peer, rest_credentials, start_server};
use ferroturn::client::TurnClient;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Two runtime threads: the webhook receiver answers while dropping the server waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_passwords_never_reach_the_log() {
    if !alone() {
        return run_alone(module_path!(), "secrets_and_passwords_never_reach_the_log").await;
    }
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    // With a usage webhook, whose client logs at TRACE too: its secret stays out.
    let mut hook = Receiver::plain().await;
    let server = start_server(&format!(
        "user = [\"bob:static-password-xyz\"]\n{}",
        hook_toml(&hook.url)
    ))
    .await;
    let peer = echo_peer().await;
    let mut c = client(&server, "alice").await;
    c.allocate().await.unwrap();
    c.create_permission(&[peer.addr]).await.unwrap();
    let (u, p) = rest_credentials(SECRET, "carol", Duration::from_secs(600));
    let mut wrong = TurnClient::new(server.addr, &u, &format!("{p}x"))
        .await
        .unwrap();
    assert!(wrong.allocate().await.is_err());
    let mut bob = TurnClient::new(server.addr, "bob", "not-the-password")
        .await
        .unwrap();
    assert!(bob.allocate().await.is_err());
    let mut bob = TurnClient::new(server.addr, "bob", "static-password-xyz")
        .await
        .unwrap();
    bob.allocate().await.unwrap();
    c.refresh(0).await.unwrap();
    assert_eq!(hook.records(1, crate::common::WAIT).await.len(), 1);
    drop(server);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(log.contains("allocation created"), "{log}");
    assert!(log.contains("allocation deleted"), "{log}");
    assert!(log.contains("ferroturn::usage"), "{log}");
    for secret in [
        HOOK_SECRET,
        SECRET,
        "static-password-xyz",
        p.as_str(),
        "not-the-password",
    ] {
        assert!(
            !log.contains(secret),
            "`{secret}` appears in the log:\n{log}"
        );
    }
}
