//! The counters are exact: after hundreds of concurrent random writes from many
//! clients over two instances on one database and Redis (creates, batches, every mark,
//! every bulk with random filters, several users and workspaces), and after a
//! retention pass, every (user, workspace) row of `notification_counts` equals a
//! `COUNT(*)` over the notifications, and `unread-count` says the same.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{new_user, request_to, service_token, settings, user_token, TestServer};
use serde_json::{json, Value};

const WORKSPACES: [&str; 3] = ["acme", "beta", "gamma"];
const KINDS: [&str; 2] = ["A", "B"];
const MARKS: [&str; 5] = ["read", "seen", "unread", "archive", "unarchive"];
const BULKS: [&str; 3] = ["read-all", "seen-all", "archive-all"];
const CLIENTS: usize = 8;
const OPERATIONS: usize = 100;

/// xorshift64*: a reproducible stream per client (the seed is printed on failure).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A workspace slug or user-level (`None`).
    fn workspace(&mut self) -> Option<&'static str> {
        let i = self.below(WORKSPACES.len() + 1);
        WORKSPACES.get(i).copied()
    }
}

struct World {
    addrs: [SocketAddr; 2],
    users: Vec<String>,
    /// Every id created so far: marks pick among them (any user's: others' are ignored).
    ids: Mutex<Vec<String>>,
}

impl World {
    fn send(&self, rng: &mut Rng, method: &str, path: &str, token: &str, body: &Value) -> Value {
        let addr = *rng.pick(&self.addrs);
        let body = body.to_string();
        let auth = format!("Bearer {token}");
        let response = request_to(
            addr,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        );
        assert!(
            matches!(response.status, 200 | 201),
            "{method} {path} {body}: {} {}",
            response.status,
            response.text()
        );
        response.json()
    }

    fn new_item(&self, rng: &mut Rng) -> Value {
        json!({
            "user_id": rng.pick(&self.users),
            "workspace": rng.workspace(),
            "kind": rng.pick(&KINDS),
            "payload": {},
        })
    }

    /// A token of a random user: every workspace, or only acme.
    fn token(&self, rng: &mut Rng) -> String {
        let user = rng.pick(&self.users);
        if rng.below(2) == 0 {
            user_token(user, &["*"])
        } else {
            user_token(user, &["acme"])
        }
    }

    fn operate(&self, rng: &mut Rng) {
        match rng.below(10) {
            0 | 1 => {
                let item = self.new_item(rng);
                let created = self.send(
                    rng,
                    "POST",
                    "/v1/internal/notifications",
                    &service_token(),
                    &item,
                );
                self.remember(&[created]);
            }
            2 => {
                let items: Vec<Value> =
                    (0..1 + rng.below(20)).map(|_| self.new_item(rng)).collect();
                let body = json!({ "notifications": items });
                let created = self.send(
                    rng,
                    "POST",
                    "/v1/internal/notifications/batch",
                    &service_token(),
                    &body,
                );
                self.remember(created["notifications"].as_array().expect("array"));
            }
            3..=7 => {
                let ids: Vec<String> = {
                    let known = self.ids.lock().unwrap_or_else(|e| e.into_inner());
                    if known.is_empty() {
                        return;
                    }
                    (0..1 + rng.below(10))
                        .map(|_| rng.pick(&known).clone())
                        .collect()
                };
                let path = format!("/v1/notifications/{}", rng.pick(&MARKS));
                let token = self.token(rng);
                self.send(rng, "PATCH", &path, &token, &json!({ "ids": ids }));
            }
            _ => {
                let path = format!("/v1/notifications/{}", rng.pick(&BULKS));
                let token = self.token(rng);
                // Within what the token grants, or no filter.
                let workspace = match rng.below(3) {
                    0 => Some("acme"),
                    _ => None,
                };
                let kind = if rng.below(2) == 0 {
                    Some(*rng.pick(&KINDS))
                } else {
                    None
                };
                self.send(
                    rng,
                    "POST",
                    &path,
                    &token,
                    &json!({"workspace": workspace, "kind": kind}),
                );
            }
        }
    }

    fn remember(&self, created: &[Value]) {
        let mut known = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(
            created
                .iter()
                .map(|n| n["id"].as_str().expect("id").to_string()),
        );
    }
}

/// Every (user, workspace) where the counters and a count over the rows disagree.
fn drift(client: &mut postgres::Client, users: &[String]) -> Vec<String> {
    client
        .query(
            "SELECT user_id, workspace, c.unread, c.unseen, t.unread, t.unseen
             FROM (SELECT * FROM notification_counts WHERE user_id = ANY($1)) AS c
             FULL JOIN (
                 SELECT user_id, coalesce(workspace, '') AS workspace,
                        count(*) FILTER (WHERE read_at IS NULL AND archived_at IS NULL) AS unread,
                        count(*) FILTER (WHERE seen_at IS NULL AND archived_at IS NULL) AS unseen
                 FROM notifications WHERE user_id = ANY($1) GROUP BY 1, 2) AS t
             USING (user_id, workspace)
             WHERE coalesce(c.unread, 0) <> coalesce(t.unread, 0)
                OR coalesce(c.unseen, 0) <> coalesce(t.unseen, 0)",
            &[&users],
        )
        .expect("compare")
        .iter()
        .map(|row| {
            let (user, workspace): (String, String) = (row.get(0), row.get(1));
            let counters: (Option<i64>, Option<i64>) = (row.get(2), row.get(3));
            let counted: (Option<i64>, Option<i64>) = (row.get(4), row.get(5));
            format!("{user}/{workspace:?}: counters {counters:?}, COUNT(*) {counted:?}")
        })
        .collect()
}

fn database() -> postgres::Client {
    postgres::Client::connect(&common::database_url(), postgres::NoTls).expect("connect")
}

#[test]
fn counters_equal_a_count_after_concurrent_random_writes_on_two_instances() {
    let mut shared = settings();
    let a = TestServer::with(shared.clone());
    shared.http_addr = Some("127.0.0.1:0".into());
    let b = TestServer::with(shared);
    let world = Arc::new(World {
        addrs: [a.http_addr(), b.http_addr()],
        users: (0..4).map(|i| new_user(&format!("count{i}"))).collect(),
        ids: Mutex::new(Vec::new()),
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let world = world.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                for _ in 0..OPERATIONS {
                    world.operate(&mut rng);
                }
            })
        })
        .collect();
    for client in clients {
        client
            .join()
            .unwrap_or_else(|_| panic!("a client failed (seed {seed})"));
    }

    let mut client = database();
    let total: i64 = client
        .query_one(
            "SELECT count(*) FROM notifications WHERE user_id = ANY($1)",
            &[&world.users],
        )
        .expect("count")
        .get(0);
    assert!(total > 100, "the clients created {total} notifications");
    let wrong = drift(&mut client, &world.users);
    assert!(
        wrong.is_empty(),
        "seed {seed}: counters drifted:\n{}",
        wrong.join("\n")
    );
    // And the API reads them: every workspace, then one.
    for user in &world.users {
        for (grants, workspace) in [
            (vec!["*"], None),
            (vec!["acme"], None),
            (vec!["*"], Some("beta")),
        ] {
            let expected: (i64, i64) = {
                let row = client
                    .query_one(
                        "SELECT count(*) FILTER (WHERE read_at IS NULL), count(*) FILTER (WHERE seen_at IS NULL)
                         FROM notifications WHERE user_id = $1 AND archived_at IS NULL
                           AND (workspace IS NULL OR $2 OR workspace = $3)",
                        &[user, &(grants == ["*"] && workspace.is_none()), &workspace.unwrap_or("acme")],
                    )
                    .expect("count");
                (row.get(0), row.get(1))
            };
            let query = workspace
                .map(|w| format!("?workspace={w}"))
                .unwrap_or_default();
            let response = a.get(
                &format!("/v1/notifications/unread-count{query}"),
                &user_token(user, &grants),
            );
            let body = response.json();
            assert_eq!(
                (body["unread"].as_i64(), body["unseen"].as_i64()),
                (Some(expected.0), Some(expected.1)),
                "{user} {grants:?} {query}"
            );
        }
    }
}

#[test]
fn retention_deletes_keep_the_counters_exact() {
    let server = TestServer::start();
    let mut client = database();
    let user = new_user("retained");
    let token = user_token(&user, &["*"]);
    // Old rows (40 days), unread, read and seen, in two workspaces; then fresh ones.
    for (i, workspace) in ["acme", "acme", "beta", ""]
        .iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        let fresh = uuid::Uuid::now_v7();
        let millis = notifd::notification::id_millis(&fresh) - 40 * 86_400_000;
        let id = uuid::Uuid::from_u128(
            (u128::from(millis) << 80) | (fresh.as_u128() & ((1u128 << 80) - 1)),
        );
        let at = notifd::notification::created_at_of(&id);
        let read = (i % 3 == 0).then_some(at);
        client
            .execute(
                "INSERT INTO notifications (id, user_id, workspace, kind, type, title, message, payload, read_at, seen_at, created_at, updated_at) \
                 VALUES ($1, $2, NULLIF($3, ''), 'old', 'info', 'old', '', '{}'::jsonb, $4, $4, $5, $5)",
                &[&id, &user, workspace, &read, &at],
            )
            .expect("insert old row");
    }
    for workspace in [json!("acme"), Value::Null] {
        server.create(
            &json!({"user_id": user, "workspace": workspace, "kind": "fresh", "payload": {}}),
        );
    }
    let body = |r: common::Response| (r.json()["unread"].as_i64(), r.json()["unseen"].as_i64());
    assert_eq!(
        body(server.get("/v1/notifications/unread-count", &token)),
        (Some(10), Some(10))
    );
    let deleted = notifd::retention::run_once(&common::database_url(), 30).expect("pass runs");
    assert!(deleted.is_some_and(|n| n >= 12), "{deleted:?}");
    assert!(drift(&mut client, std::slice::from_ref(&user)).is_empty());
    assert_eq!(
        body(server.get("/v1/notifications/unread-count", &token)),
        (Some(2), Some(2))
    );
}
