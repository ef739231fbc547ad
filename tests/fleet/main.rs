//! A fleet: three ferroturn processes on 127.0.0.2, .3 and .4, all on the same port, and a
//! real `redis-server` on 127.0.0.1 that each test starts for itself (Debian's package;
//! scripts/install-test-deps.sh installs it). What the nodes must share goes through
//! Redis: the registry, session deletions, the user database in coturn's schema; what
//! they share without it: the nonce key (`nonce-secret`).
//!
//! Every wait is bounded and polls: the registry is written every second with a 5-second
//! expiry, the user database is read every 2 seconds.

#[path = "../common/mod.rs"]
mod common;
mod helm;

use common::adversary::{Session, error_code, is_success};
use common::http::{Reply, http};
use common::process::{ChildGuard, ServerProcess, TempDir};
use common::{PROCESS_WAIT, REALM, SECRET, code, config_toml, ip, rest_credentials, sha256_hex};
use ferroturn::client::{ClientError, TurnClient};
use ferroturn_core::proto::wire::method;
use redis::AsyncCommands;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "fleet-admin-token";
const TOKEN: &str = "fleet-credentials-token";
const NONCE_SECRET: &str = "fleet-nonce-secret-0123456789";
/// How long a change may take to reach every node: a registry write (1 s) or expiry
/// (5 s), a user database read (2 s), Redis's own reconnect after a stop.
const FLEET_WAIT: Duration = Duration::from_secs(15);

/// A redis-server of this test's own on a free port, without persistence.
struct Redis {
    child: ChildGuard,
    port: u16,
    _dir: TempDir,
}

impl Redis {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("the URL parses");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("redis-server never answered: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

async fn start_redis() -> Redis {
    let dir = TempDir::new("fleet-redis");
    let port = free_tcp_port("127.0.0.1");
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = ChildGuard::spawn(
        &mut command,
        "run scripts/install-test-deps.sh (redis-server)",
    );
    let redis = Redis {
        child,
        port,
        _dir: dir,
    };
    let mut c = redis.conn().await;
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    redis
}

/// A TCP port free on `ip` now.
fn free_tcp_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// One node: a ferroturn process with the fleet's Redis, its API on an ephemeral port.
struct Node {
    process: ServerProcess,
    api: SocketAddr,
    name: String,
    _dir: TempDir,
}

impl Node {
    fn udp(&self) -> SocketAddr {
        self.process.addr
    }

    async fn admin(&self, verb: &str, path: &str) -> Reply {
        let auth = format!("Bearer {ADMIN}");
        http(self.api, verb, path, &[("Authorization", &auth)]).await
    }

    /// The names of the nodes this node's registry view lists.
    async fn node_names(&self) -> Vec<String> {
        node_names_at(self.api).await
    }

    /// The users of this node's sessions.
    async fn session_users(&self) -> Vec<String> {
        let r = self.admin("GET", "/api/v1/admin/sessions").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let mut users: Vec<String> = r.json()["sessions"]
            .as_array()
            .expect("a sessions list")
            .iter()
            .filter_map(|s| s["user"].as_str().map(str::to_owned))
            .collect();
        users.sort();
        users
    }

    /// A gauge or counter from /metrics, if present.
    async fn metric(&self, name: &str) -> Option<f64> {
        let r = http(self.api, "GET", "/metrics", &[]).await;
        r.body.lines().find_map(|l| {
            let (series, value) = l.split_once(' ')?;
            (series == name).then(|| value.parse().ok())?
        })
    }

    async fn client(&self, user: &str) -> TurnClient {
        let (u, p) = rest_credentials(SECRET, user, Duration::from_secs(600));
        let mut c = TurnClient::new(self.udp(), &u, &p).await.expect("a client");
        // An answer may wait for the store's timeouts (a second or two while Redis is
        // stopped), longer on a loaded machine: more than the client's default 3 s.
        c.request_timeout = Duration::from_secs(10);
        c
    }
}

/// The names of the nodes the registry view of the node with its API at `api` lists,
/// sorted (none while it does not answer 200).
async fn node_names_at(api: SocketAddr) -> Vec<String> {
    let auth = format!("Bearer {ADMIN}");
    let r = http(
        api,
        "GET",
        "/api/v1/admin/nodes",
        &[("Authorization", &auth)],
    )
    .await;
    if r.status != 200 {
        return Vec::new();
    }
    let mut names: Vec<String> = r.json()["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Starts a node on `ip`:`port` (the port every node shares) with `extra` TOML; UDP
/// only unless `extra` sets `no-tcp`.
fn start_node(ip: &str, port: u16, redis: &Redis, extra: &str) -> Node {
    let dir = TempDir::new("fleet-node");
    let name = format!("node-{ip}");
    let udp_only = if extra.contains("no-tcp") {
        ""
    } else {
        "no-tcp = true\n"
    };
    let toml = config_toml(
        SECRET,
        &format!(
            "listening-ip = [\"{ip}\"]\nlistening-port = {port}\n{udp_only}\
             allowed-peer-ip = [\"127.0.0.0-127.255.255.255\"]\n\
             api-listen = \"{ip}:0\"\nadmin-key-sha256 = [\"{}\"]\napi-key-sha256 = [\"{}\"]\n\
             redis = \"{}\"\nnode-name = \"{name}\"\nnonce-secret = [\"{NONCE_SECRET}\"]\n{extra}",
            sha256_hex(ADMIN),
            sha256_hex(TOKEN),
            redis.url()
        ),
    );
    let file = dir.join("turnserver.toml");
    std::fs::write(&file, toml).expect("write the node's configuration");
    let process =
        ServerProcess::start_with_api(&["--config".as_ref(), file.as_os_str()], PROCESS_WAIT);
    let api = process.api.expect("the API listens");
    Node {
        process,
        api,
        name,
        _dir: dir,
    }
}

/// Three nodes on 127.0.0.2, .3 and .4, one port.
fn start_fleet(redis: &Redis) -> Vec<Node> {
    start_fleet_with(redis, "")
}

/// [`start_fleet`] with `extra` TOML on every node.
fn start_fleet_with(redis: &Redis, extra: &str) -> Vec<Node> {
    let port = free_tcp_port("127.0.0.2");
    ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|ip| start_node(ip, port, redis, extra))
        .collect()
}

/// 0 for an allocation of `user` at `node`, else the error code (1: no answer); the
/// client, to keep the allocation alive.
async fn try_allocate(node: &Node, user: &str) -> (u16, TurnClient) {
    let mut c = node.client(user).await;
    let code = match c.allocate().await {
        Ok(_) => 0,
        Err(ClientError::Error(code)) => code,
        Err(_) => 1,
    };
    (code, c)
}

/// An authenticated UDP Allocate from `s`, with its current nonce.
fn allocate_request(s: &Session) -> Vec<u8> {
    s.authed(method::ALLOCATE)
        .transport(17)
        .integrity(&s.key())
        .fingerprint()
        .bytes()
}

/// The unexpired leases of `user` in Redis (scored by expiry, Redis's clock).
async fn leases_in_redis(redis: &Redis, user: &str) -> usize {
    let mut c = redis.conn().await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    let now_ms = secs * 1000 + micros / 1000;
    let n: usize = redis::cmd("ZCOUNT")
        .arg(format!("ferroturn:leases:{user}"))
        .arg(now_ms)
        .arg("+inf")
        .query_async(&mut c)
        .await
        .unwrap_or(0);
    n
}

/// Polls `check` every 200 ms until it holds or [`FLEET_WAIT`] passes; the last value.
async fn eventually<T, F, Fut>(what: &str, read: F, check: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    eventually_within(FLEET_WAIT, what, read, check).await
}

/// [`eventually`] with its own bound.
async fn eventually_within<T, F, Fut>(
    wait: Duration,
    what: &str,
    mut read: F,
    check: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    let deadline = Instant::now() + wait;
    loop {
        let value = read().await;
        if check(&value) {
            return value;
        }
        if Instant::now() > deadline {
            panic!("{what}: still {value:?} after {wait:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every node lists every node; a node killed with SIGKILL (no goodbye) leaves the
/// registry once its entry expires.
#[tokio::test]
async fn nodes_register_and_a_killed_node_leaves_the_registry() {
    let redis = start_redis().await;
    let fleet = start_fleet(&redis);
    let mut all: Vec<String> = fleet.iter().map(|n| n.name.clone()).collect();
    all.sort();
    for node in &fleet {
        eventually("the registry", || node.node_names(), |names| names == &all).await;
    }
    let r = fleet[0].admin("GET", "/api/v1/admin/nodes").await;
    let listed = r.json();
    let first = &listed["nodes"][0];
    assert!(
        first["udp"][0]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", fleet[0].udp().port()))
    );
    assert_eq!(first["draining"], Value::Bool(false));

    fleet[1].process.child.signal(libc::SIGKILL);
    let rest = vec![fleet[0].name.clone(), fleet[2].name.clone()];
    eventually(
        "the registry after a kill",
        || fleet[2].node_names(),
        |n| n == &rest,
    )
    .await;
}

/// A nonce from node A is good at node B (`nonce-secret`); a session deletion made on
/// node C ends the user's allocations on A and B, and only that user's.
#[tokio::test]
async fn a_deletion_on_one_node_ends_the_users_sessions_on_every_node() {
    let redis = start_redis().await;
    let fleet = start_fleet(&redis);

    let (u, p) = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let mut s = Session::challenged(ip("127.0.0.1"), fleet[0].udp(), &u, &p).await;
    s.server = fleet[1].udp();
    let msg = allocate_request(&s);
    let r = s.exchange(&msg).await.expect("an answer");
    assert!(is_success(&r), "B took A's nonce: {:?}", error_code(&r));

    let mut on_a = fleet[0].client("alice").await;
    on_a.allocate().await.expect("alice on A");
    let mut bob = fleet[0].client("bob").await;
    bob.allocate().await.expect("bob on A");
    eventually(
        "sessions on A",
        || fleet[0].session_users(),
        |u| u.len() == 2,
    )
    .await;
    eventually(
        "sessions on B",
        || fleet[1].session_users(),
        |u| u == &["alice"],
    )
    .await;

    let r = fleet[2]
        .admin("DELETE", "/api/v1/admin/sessions?user=alice")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["fleet"], Value::Bool(true), "{}", r.body);
    eventually(
        "alice gone from A",
        || fleet[0].session_users(),
        |u| u == &["bob"],
    )
    .await;
    eventually(
        "alice gone from B",
        || fleet[1].session_users(),
        |u| u.is_empty(),
    )
    .await;
    assert_eq!(code(on_a.refresh(600).await), 437);
    bob.refresh(600).await.expect("bob's allocation lives");
}

/// A user and a REST secret written into Redis in coturn's redis-userdb schema
/// authenticate at every node without a restart; removed, they stop authenticating new
/// allocations.
#[tokio::test]
async fn users_and_secrets_in_coturns_schema_authenticate_at_once() {
    let redis = start_redis().await;
    let fleet = start_fleet(&redis);
    let mut c = redis.conn().await;

    let try_carol = |node: &Node| {
        let udp = node.udp();
        async move {
            let mut carol = TurnClient::new(udp, "carol", "carols-password")
                .await
                .unwrap();
            carol
                .allocate()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        }
    };
    assert!(
        try_carol(&fleet[0]).await.is_err(),
        "carol is unknown at first"
    );
    let key: String =
        ferroturn_core::proto::integrity::long_term_key("carol", REALM, b"carols-password")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    let user_key = format!("turn/realm/{REALM}/user/carol/key");
    let () = c.set(&user_key, &key).await.unwrap();
    for node in &fleet {
        eventually("carol at a node", || try_carol(node), |r| r.is_ok())
            .await
            .unwrap();
    }

    let secret_key = format!("turn/realm/{REALM}/secret");
    let () = c.sadd(&secret_key, "secret-from-redis").await.unwrap();
    let try_rest = |node: &Node| {
        let udp = node.udp();
        async move {
            let (u, p) = rest_credentials("secret-from-redis", "dave", Duration::from_secs(600));
            let mut dave = TurnClient::new(udp, &u, &p).await.unwrap();
            dave.allocate()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        }
    };
    eventually("a secret from Redis", || try_rest(&fleet[1]), |r| r.is_ok())
        .await
        .unwrap();

    let () = c.del(&user_key).await.unwrap();
    eventually("carol removed", || try_carol(&fleet[2]), |r| r.is_err())
        .await
        .unwrap_err();
}

/// With Redis stopped (SIGSTOP: connections hang, the worst case), every node goes on
/// allocating and relaying and says so in `ferroturn_fleet_redis_up`; once Redis runs
/// again (SIGCONT) the gauge and the registry come back.
#[tokio::test]
async fn nodes_serve_on_while_redis_is_stopped() {
    let redis = start_redis().await;
    let fleet = start_fleet(&redis);
    let up = "ferroturn_fleet_redis_up";
    eventually("Redis up", || fleet[0].metric(up), |v| *v == Some(1.0)).await;

    redis.child.signal(libc::SIGSTOP);
    eventually(
        "Redis seen down",
        || fleet[0].metric(up),
        |v| *v == Some(0.0),
    )
    .await;
    let mut during = fleet[0].client("erin").await;
    during
        .allocate()
        .await
        .expect("allocations go on without Redis");
    let peer = common::echo_peer().await;
    during.channel_bind(0x4000, peer.addr).await.unwrap();
    during
        .send_channel_data(0x4000, b"still relaying")
        .await
        .unwrap();
    assert!(during.recv_relayed(common::WAIT).await.unwrap().is_some());

    redis.child.signal(libc::SIGCONT);
    eventually(
        "Redis up again",
        || fleet[0].metric(up),
        |v| *v == Some(1.0),
    )
    .await;
    let mut all: Vec<String> = fleet.iter().map(|n| n.name.clone()).collect();
    all.sort();
    eventually(
        "the registry again",
        || fleet[1].node_names(),
        |n| n == &all,
    )
    .await;
}

/// A revocation made on one node holds at every node: the user's allocation on another
/// node ends, and a new one anywhere gets 401 until the revocation is lifted.
#[tokio::test]
async fn a_revocation_holds_at_every_node_until_lifted() {
    let redis = start_redis().await;
    let fleet = start_fleet(&redis);
    let mut on_b = fleet[1].client("alice").await;
    on_b.allocate().await.expect("alice on B");

    let r = fleet[0]
        .admin("POST", "/api/v1/admin/revocations?user=alice&seconds=600")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["fleet"], Value::Bool(true), "{}", r.body);
    eventually(
        "alice gone from B",
        || fleet[1].session_users(),
        |u| u.is_empty(),
    )
    .await;
    let try_alice = |node: &Node| {
        let node_udp = node.udp();
        async move {
            let (u, p) = rest_credentials(SECRET, "alice", Duration::from_secs(600));
            let mut c = TurnClient::new(node_udp, &u, &p).await.unwrap();
            // 0 for an allocation, else the error code (1: no answer).
            match c.allocate().await {
                Ok(_) => 0,
                Err(ClientError::Error(code)) => code,
                Err(_) => 1,
            }
        }
    };
    eventually("alice refused at C", || try_alice(&fleet[2]), |c| *c == 401).await;
    let listed = fleet[2]
        .admin("GET", "/api/v1/admin/revocations")
        .await
        .json();
    assert_eq!(listed["revocations"][0]["user"], "alice", "{listed}");

    let r = fleet[0]
        .admin("DELETE", "/api/v1/admin/revocations?user=alice")
        .await;
    assert_eq!(r.json()["fleet"], Value::Bool(true), "{}", r.body);
    eventually("alice back at C", || try_alice(&fleet[2]), |c| *c == 0).await;
}

/// The credentials endpoint of any node hands out the URIs of every node that is not
/// draining; a draining node leaves that list and answers a new Allocate with 300 Try
/// Alternate naming a live node.
#[tokio::test]
async fn credentials_name_live_nodes_and_a_draining_node_redirects() {
    let redis = start_redis().await;
    let fleet = start_fleet(&redis);
    let uris = |node: &Node| {
        let api = node.api;
        async move {
            let auth = format!("Bearer {TOKEN}");
            let r = http(
                api,
                "GET",
                "/api/v1/credentials?user=zed",
                &[("Authorization", &auth)],
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            let mut hosts: Vec<String> = r.json()["uris"]
                .as_array()
                .expect("uris")
                .iter()
                .filter_map(|u| u.as_str())
                .filter_map(|u| u.strip_prefix("turn:"))
                .filter_map(|u| u.split(':').next())
                .map(str::to_owned)
                .collect();
            hosts.sort();
            hosts.dedup();
            hosts
        }
    };
    let every = vec!["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    eventually("every node's URIs", || uris(&fleet[0]), |h| h == &every).await;

    let r = fleet[1].admin("POST", "/api/v1/admin/drain").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let live = vec!["127.0.0.2", "127.0.0.4"];
    eventually(
        "the draining node left out",
        || uris(&fleet[2]),
        |h| h == &live,
    )
    .await;

    let (u, p) = rest_credentials(SECRET, "yan", Duration::from_secs(600));
    let s = Session::challenged(ip("127.0.0.1"), fleet[1].udp(), &u, &p).await;
    let alternate = || {
        let msg = allocate_request(&s);
        let s = &s;
        async move {
            let r = s.exchange(&msg).await.expect("an answer");
            let value = common::wire::attribute(&r, 0x8023).map(<[u8]>::to_vec);
            (error_code(&r), value)
        }
    };
    let (code, value) = eventually("300 Try Alternate", alternate, |(c, v)| {
        *c == Some(300) && v.is_some()
    })
    .await;
    assert_eq!(code, Some(300));
    let value = value.unwrap();
    // ALTERNATE-SERVER: 0, family 1 (IPv4), port, address.
    assert_eq!(&value[..2], &[0, 1]);
    let port = u16::from_be_bytes([value[2], value[3]]);
    let to = std::net::Ipv4Addr::new(value[4], value[5], value[6], value[7]);
    assert_eq!(
        port,
        fleet[1].udp().port(),
        "every node listens on one port"
    );
    assert!(
        [fleet[0].udp(), fleet[2].udp()].contains(&SocketAddr::from((to, port))),
        "redirected to {to}:{port}, a live node"
    );
}

/// `user-quota = 2` holds across the fleet: two allocations on A and B, the third on C
/// gets 486; one deleted, C gets its allocation. A node killed with SIGKILL stops renewing
/// its leases, which expire (15 s), and the user may allocate again.
#[tokio::test]
async fn user_quota_holds_across_the_fleet_and_a_dead_nodes_leases_expire() {
    let redis = start_redis().await;
    let fleet = start_fleet_with(&redis, "user-quota = 2");
    let (a, mut on_a) = try_allocate(&fleet[0], "alice").await;
    let (b, _on_b) = try_allocate(&fleet[1], "alice").await;
    assert_eq!((a, b), (0, 0));
    assert_eq!(leases_in_redis(&redis, "alice").await, 2);
    let (c, _) = try_allocate(&fleet[2], "alice").await;
    assert_eq!(
        c, 486,
        "the third allocation over the quota, on a third node"
    );
    let (other, _bob) = try_allocate(&fleet[2], "bob").await;
    assert_eq!(other, 0, "another user is not affected");

    on_a.refresh(0).await.unwrap();
    eventually(
        "the lease given back",
        || leases_in_redis(&redis, "alice"),
        |n| *n == 1,
    )
    .await;
    let (c, _on_c) = try_allocate(&fleet[2], "alice").await;
    assert_eq!(c, 0, "a slot was freed");
    let (full, _) = try_allocate(&fleet[0], "alice").await;
    assert_eq!(full, 486);

    // B dies with alice's allocation: its lease expires, and alice may allocate again.
    fleet[1].process.child.signal(libc::SIGKILL);
    // At most 15 s after B's last renewal, before the kill: a margin beyond that.
    eventually_within(
        Duration::from_secs(25),
        "B's lease expired",
        || leases_in_redis(&redis, "alice"),
        |n| *n == 1,
    )
    .await;
    let (again, _keep) = try_allocate(&fleet[0], "alice").await;
    assert_eq!(again, 0);
}

/// A TCP allocation (RFC 6062) holds a lease like any other: with `user-quota = 1`,
/// alice's TCP allocation on A (over TCP, relaying a Connect to a peer) leaves her no
/// allocation on B until it ends, and then its lease is given back.
#[tokio::test]
async fn a_tcp_allocation_holds_its_lease_across_the_fleet() {
    let redis = start_redis().await;
    let fleet = start_fleet_with(&redis, "user-quota = 1\nno-tcp = false");
    let (u, p) = rest_credentials(SECRET, "alice", Duration::from_secs(600));
    let mut on_a = TurnClient::connect_tcp(fleet[0].udp(), &u, &p)
        .await
        .expect("TCP connect to A");
    on_a.allocate_tcp().await.expect("a TCP allocation on A");
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    on_a.connect(peer.local_addr().unwrap())
        .await
        .expect("Connect from the TCP allocation");
    assert_eq!(leases_in_redis(&redis, "alice").await, 1);
    let (b, _) = try_allocate(&fleet[1], "alice").await;
    assert_eq!(b, 486, "the TCP allocation holds alice's one lease");

    on_a.refresh(0).await.unwrap();
    eventually(
        "the TCP allocation's lease given back",
        || leases_in_redis(&redis, "alice"),
        |n| *n == 0,
    )
    .await;
    let (b, _on_b) = try_allocate(&fleet[1], "alice").await;
    assert_eq!(b, 0, "the lease was freed");
}

/// With Redis stopped, new allocations go on (`shared-state-failure = "open"`, the
/// default) after the lease ask times out; when Redis runs again the leases granted
/// meanwhile are written there. With "closed", an allocation gets 508 meanwhile.
#[tokio::test]
async fn leases_fail_open_by_default_and_come_back_with_redis() {
    let redis = start_redis().await;
    let fleet = start_fleet_with(&redis, "user-quota = 5");
    let port = free_tcp_port("127.0.0.5");
    let closed = start_node(
        "127.0.0.5",
        port,
        &redis,
        "user-quota = 5\nshared-state-failure = \"closed\"",
    );
    let (first, _one) = try_allocate(&fleet[0], "alice").await;
    assert_eq!(first, 0);
    assert_eq!(leases_in_redis(&redis, "alice").await, 1);

    redis.child.signal(libc::SIGSTOP);
    let (during, _two) = try_allocate(&fleet[0], "alice").await;
    assert_eq!(during, 0, "fail open: the node's own quotas decide");
    let (refused, _) = try_allocate(&closed, "alice").await;
    assert_eq!(refused, 508, "fail closed");

    redis.child.signal(libc::SIGCONT);
    eventually(
        "leases back in Redis",
        || leases_in_redis(&redis, "alice"),
        |n| *n == 2,
    )
    .await;
}
