//! How notifd reaches Redis (contract §5): one server (`redis://…`: PUBLISH and
//! SUBSCRIBE) or a Redis Cluster (`redis+cluster://host:port,host:port`: SPUBLISH and
//! SSUBSCRIBE, sharded Pub/Sub, on the same channel names).
//!
//! The publisher, the roster and the readiness check talk through a [`Link`]: a plain
//! connection or the redis crate's synchronous cluster connection, which routes each
//! command to the primary owning its key's slot and follows `MOVED` after a slot
//! moves or a failover. The crate's cluster connection has no Pub/Sub, so the
//! subscriber's sharded connections are notifd's own (`subscriber::shards`), one per
//! primary, found from [`Redis::Cluster`]'s seeds.

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{ConnectionLike, RedisResult, Value};

/// The scheme that names a Redis Cluster in `NOTIFD_REDIS_URL`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where Redis is, as `NOTIFD_REDIS_URL` names it.
#[derive(Clone)]
pub enum Redis {
    Single(redis::Client),
    /// The seed nodes: any of them answers for the cluster's topology.
    Cluster(Vec<redis::Client>),
}

impl Redis {
    /// Reads `NOTIFD_REDIS_URL`: `redis://…` (or `rediss://`, `unix://`) for one
    /// server; `redis+cluster://[user:password@]host:port,host:port[/…]` for a cluster,
    /// the credentials and anything after the hosts applying to every node.
    pub fn open(url: &str) -> Result<Redis, String> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return redis::Client::open(url)
                .map(Redis::Single)
                .map_err(|e| e.to_string());
        };
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), rest),
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (hosts, tail) = rest.split_at(end);
        let seeds: Vec<redis::Client> = hosts
            .split(',')
            .filter(|host| !host.trim().is_empty())
            .map(|host| redis::Client::open(format!("redis://{credentials}{}{tail}", host.trim())))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if seeds.is_empty() {
            return Err("a cluster URL names no node (redis+cluster://host:port,host:port)".into());
        }
        Ok(Redis::Cluster(seeds))
    }

    /// The password the URL carries (to keep it out of messages).
    pub fn password(&self) -> Option<&str> {
        let client = match self {
            Redis::Single(client) => client,
            Redis::Cluster(seeds) => seeds.first()?,
        };
        client.get_connection_info().redis_settings().password()
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }

    /// The server (or the seed nodes) for logs and messages: addresses only, never
    /// credentials.
    pub fn describe(&self) -> String {
        match self {
            Redis::Single(client) => client.get_connection_info().addr().to_string(),
            Redis::Cluster(seeds) => {
                let nodes: Vec<String> = seeds
                    .iter()
                    .map(|seed| seed.get_connection_info().addr().to_string())
                    .collect();
                format!("cluster {}", nodes.join(","))
            }
        }
    }

    /// A connection, established within `timeout` (for a cluster: to every node of
    /// the topology the first answering seed reports), whose commands time out after
    /// `timeout` as well.
    pub fn connect(&self, timeout: Duration) -> RedisResult<Link> {
        let link = match self {
            Redis::Single(client) => Link::Single(client.get_connection_with_timeout(timeout)?),
            Redis::Cluster(seeds) => {
                let nodes = seeds.iter().map(|seed| seed.get_connection_info().clone());
                // Few, short retries: a caller that must not wait on Redis (a create's
                // publish, a handshake's roster call) gets an error within about its
                // timeout, and its own outage path takes over.
                let client = ClusterClient::builder(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()?;
                Link::Cluster(Box::new(client.get_connection()?))
            }
        };
        link.set_timeouts(timeout)?;
        Ok(link)
    }
}

/// One connection to Redis: a server's, or a cluster's (one per node inside).
pub enum Link {
    Single(redis::Connection),
    /// Boxed: four times a plain connection's size, and pooled by the dozen.
    Cluster(Box<ClusterConnection>),
}

impl Link {
    /// Read and write timeouts of every socket underneath.
    pub fn set_timeouts(&self, timeout: Duration) -> RedisResult<()> {
        match self {
            Link::Single(conn) => {
                conn.set_read_timeout(Some(timeout))?;
                conn.set_write_timeout(Some(timeout))
            }
            Link::Cluster(conn) => {
                conn.set_read_timeout(Some(timeout))?;
                conn.set_write_timeout(Some(timeout))
            }
        }
    }

    /// Publishes `(channel, message)` pairs in one round trip per node: PUBLISH on
    /// one server, SPUBLISH (to each channel's slot owner) on a cluster.
    pub fn publish_all<'a>(
        &mut self,
        messages: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> RedisResult<()> {
        match self {
            Link::Single(conn) => {
                let mut pipe = redis::pipe();
                for (channel, message) in messages {
                    pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
                }
                pipe.query::<()>(conn)
            }
            Link::Cluster(conn) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for (channel, message) in messages {
                    pipe.cmd("SPUBLISH").arg(channel).arg(message).ignore();
                }
                pipe.query::<()>(conn)
            }
        }
    }

    /// PING (a cluster answers from one node).
    pub fn ping(&mut self) -> RedisResult<()> {
        redis::cmd("PING").query::<String>(self).map(drop)
    }
}

/// Commands go through as they would on the connection underneath: the roster's
/// script and ZREM route by their key on a cluster.
impl ConnectionLike for Link {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Link::Single(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Link::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Link::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(conn) => conn.get_db(),
            Link::Cluster(conn) => conn.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Link::Single(conn) => conn.check_connection(),
            Link::Cluster(conn) => conn.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Link::Single(conn) => conn.is_open(),
            Link::Cluster(conn) => conn.is_open(),
        }
    }
}

/// The cluster slot of a key or channel: CRC16/XMODEM of its hash tag (the part
/// between the first `{` and the next `}`, when not empty) or of the whole name,
/// modulo 16384, as Redis computes it.
pub fn slot(name: &[u8]) -> u16 {
    let tagged = name
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let after = &name[open + 1..];
            let close = after.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &after[..close])
        })
        .unwrap_or(name);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_every_seed_with_the_shared_credentials() {
        let Ok(Redis::Cluster(seeds)) = Redis::open("redis+cluster://:s3cret@a:7000,b:7001/")
        else {
            panic!("a cluster");
        };
        let addrs: Vec<String> = seeds
            .iter()
            .map(|s| s.get_connection_info().addr().to_string())
            .collect();
        assert_eq!(addrs, ["a:7000", "b:7001"]);
        assert_eq!(
            seeds[1].get_connection_info().redis_settings().password(),
            Some("s3cret")
        );
        assert!(!Redis::open("redis+cluster://a:7000")
            .expect("one seed")
            .describe()
            .contains("s3cret"));
        assert!(Redis::open("redis+cluster://").is_err());
        assert!(!Redis::open("redis://127.0.0.1:6379")
            .expect("single")
            .is_cluster());
    }

    #[test]
    fn slots_are_redis_own() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(
            slot(b"foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % 16384,
            "an empty tag hashes the whole name"
        );
    }
}
