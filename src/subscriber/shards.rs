//! The subscriber's Redis connections, notifd's own: for a Redis Cluster, one per
//! primary, each channel SSUBSCRIBEd on the primary that owns its slot
//! (`redis_link::slot`), all waited on at once by the subscriber's one thread
//! (`poll`); for one server, one connection (SUBSCRIBE), the same code with one node
//! owning every slot. A look's (un)subscribes go out pipelined, one write per node,
//! and their confirmations are all read before the call returns: a storm of new
//! users costs a round trip a look, not two per user.
//!
//! The topology comes from `CLUSTER SLOTS` on the first seed that answers. Anything
//! that says it changed ends the feed with an error, and the subscriber starts over
//! (topology again, every channel subscribed again, every connection caught up from
//! PostgreSQL), as after a lost connection to one Redis: a `-MOVED` answer to a
//! subscribe, a `sunsubscribe` Redis sends on its own (the slot moved, or a failover
//! took the primary's role), or a primary's connection failing (`kill -9`, a network
//! cut: seen at once, or by the next PING).

use std::collections::VecDeque;
use std::io::{self, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use redis::{RedisResult, Value};

use super::feed::{Feed, Message, COMMAND_TIMEOUT, READ_TIMEOUT};
use super::resp::{self, Resp};
use crate::redis_link::slot;

/// Largest number of primaries followed (a cluster has a handful to a few hundred).
const MAX_NODES: usize = 1000;

/// One primary's connection.
struct Node {
    addr: String,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

/// Pub/Sub on one server or sharded Pub/Sub on a cluster: the commands and the
/// pushes differ, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    Sharded,
}

impl Mode {
    fn subscribe(self) -> (&'static [u8], &'static str) {
        match self {
            Mode::Single => (b"SUBSCRIBE", "subscribe"),
            Mode::Sharded => (b"SSUBSCRIBE", "ssubscribe"),
        }
    }

    fn unsubscribe(self) -> (&'static [u8], &'static str) {
        match self {
            Mode::Single => (b"UNSUBSCRIBE", "unsubscribe"),
            Mode::Sharded => (b"SUNSUBSCRIBE", "sunsubscribe"),
        }
    }

    /// The push that carries a published message.
    fn message(self) -> &'static str {
        match self {
            Mode::Single => "message",
            Mode::Sharded => "smessage",
        }
    }
}

/// Every primary's connection (or the one server's) and which slots each owns.
pub struct Shards {
    mode: Mode,
    nodes: Vec<Node>,
    /// (first slot, last slot, index in `nodes`).
    slots: Vec<(u16, u16, usize)>,
    /// Messages read while waiting for a command's answer, for `next`.
    waiting: VecDeque<Message>,
    /// Where `next` starts looking, so no node is always served last.
    turn: usize,
}

impl Shards {
    /// Connects to every primary of the cluster the first answering seed describes.
    pub fn connect(seeds: &[redis::Client], timeout: Duration) -> RedisResult<Shards> {
        let mut last_error = None;
        for seed in seeds {
            match topology(seed, timeout) {
                Ok(slots) => return Shards::open(Mode::Sharded, seed, slots, timeout),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| lost("no seed node")))
    }

    /// One server's Pub/Sub connection, at `host:port`.
    pub fn single(client: &redis::Client, addr: &str, timeout: Duration) -> RedisResult<Shards> {
        Shards::open(
            Mode::Single,
            client,
            vec![(0, 16383, addr.to_string())],
            timeout,
        )
    }

    fn open(
        mode: Mode,
        seed: &redis::Client,
        ranges: Vec<(u16, u16, String)>,
        timeout: Duration,
    ) -> RedisResult<Shards> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut slots = Vec::with_capacity(ranges.len());
        for (first, last, addr) in ranges {
            let index = match nodes.iter().position(|node| node.addr == addr) {
                Some(index) => index,
                None if nodes.len() < MAX_NODES => {
                    let node = Node::connect(seed, &addr, timeout)
                        .map_err(|err| lost(&format!("primary {addr}: {err}")))?;
                    nodes.push(node);
                    nodes.len() - 1
                }
                None => return Err(lost("too many primaries")),
            };
            slots.push((first, last, index));
        }
        if slots.is_empty() {
            return Err(lost("the cluster reports no slots"));
        }
        Ok(Shards {
            mode,
            nodes,
            slots,
            waiting: VecDeque::new(),
            turn: 0,
        })
    }

    /// The primaries connected.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    fn owner(&self, channel: &str) -> RedisResult<usize> {
        let slot = slot(channel.as_bytes());
        self.slots
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, index)| *index)
            .ok_or_else(|| lost(&format!("no primary owns slot {slot}")))
    }

    /// Sends `commands` to node `index` in one write and reads until `is_answer` has
    /// recognized one answer per command; messages read meanwhile wait for `next`.
    fn commands(
        &mut self,
        index: usize,
        commands: &[Vec<u8>],
        is_answer: impl Fn(&str, &[Resp]) -> bool,
    ) -> RedisResult<()> {
        let mode = self.mode;
        let node = &mut self.nodes[index];
        node.writer.write_all(&commands.concat())?;
        let mut left = commands.len();
        while left > 0 {
            match resp::read(&mut node.reader)? {
                Resp::Array(Some(items)) => {
                    let kind = items.first().and_then(Resp::text).unwrap_or_default();
                    if is_answer(kind, &items) {
                        left -= 1;
                        continue;
                    }
                    if let Some(message) = push(mode, &node.addr, kind, &items)? {
                        self.waiting.push_back(message);
                    }
                }
                // PING outside subscribed mode (no channel on this node yet).
                Resp::Simple(text) if is_answer(&text.to_ascii_lowercase(), &[]) => left -= 1,
                // -MOVED, -CLUSTERDOWN, …: the topology is not what we think.
                Resp::Error(error) => return Err(lost(&format!("{}: {error}", node.addr))),
                other => return Err(lost(&format!("{}: unexpected {other:?}", node.addr))),
            }
        }
        Ok(())
    }

    /// (Un)subscribes `channels` with `command`, each confirmed by a push of `kind`:
    /// one pipelined write per node owning some of them.
    fn each_owner(
        &mut self,
        channels: &[String],
        (command, kind): (&[u8], &str),
    ) -> RedisResult<()> {
        let mut by_node: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.nodes.len()];
        for channel in channels {
            by_node[self.owner(channel)?].push(resp::command(&[command, channel.as_bytes()]));
        }
        for (index, commands) in by_node.iter().enumerate() {
            if !commands.is_empty() {
                // One confirmation per command, in order.
                self.commands(index, commands, |push, _| push == kind)?;
            }
        }
        Ok(())
    }

    /// Reads one value from node `index`: a message, or `None` for anything else it
    /// may say (a late PING answer).
    fn read_from(&mut self, index: usize) -> RedisResult<Option<Message>> {
        let mode = self.mode;
        let node = &mut self.nodes[index];
        match resp::read(&mut node.reader)? {
            Resp::Array(Some(items)) => {
                let kind = items.first().and_then(Resp::text).unwrap_or_default();
                push(mode, &node.addr, kind, &items)
            }
            Resp::Error(error) => Err(lost(&format!("{}: {error}", node.addr))),
            _ => Ok(None),
        }
    }
}

impl Feed for Shards {
    fn subscribe_all(&mut self, channels: &[String]) -> RedisResult<()> {
        self.each_owner(channels, self.mode.subscribe())
    }

    fn unsubscribe_all(&mut self, channels: &[String]) -> RedisResult<()> {
        // While ours are pending, a `sunsubscribe` counts as one of their answers:
        // one Redis sends on its own at that moment (a slot moving) goes unnoticed
        // until the next failover or slot move ends the session.
        self.each_owner(channels, self.mode.unsubscribe())
    }

    fn next(&mut self) -> RedisResult<Option<Message>> {
        if let Some(message) = self.waiting.pop_front() {
            return Ok(Some(message));
        }
        // Bytes already read into a node's buffer: no poll would report them.
        let count = self.nodes.len();
        for step in 0..count {
            let index = (self.turn + step) % count;
            if !self.nodes[index].reader.buffer().is_empty() {
                self.turn = index + 1;
                return self.read_from(index);
            }
        }
        let mut fds: Vec<libc::pollfd> = self
            .nodes
            .iter()
            .map(|node| libc::pollfd {
                fd: node.reader.get_ref().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures for the
        // duration of the call, and every fd in it is open (owned by `self.nodes`).
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                READ_TIMEOUT.as_millis() as libc::c_int,
            )
        };
        if ready < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err.into()),
            };
        }
        for step in 0..count {
            let index = (self.turn + step) % count;
            if fds[index].revents != 0 {
                self.turn = index + 1;
                // Readable, hung up or failed: the read says which.
                return self.read_from(index);
            }
        }
        Ok(None)
    }

    fn ping(&mut self) -> RedisResult<()> {
        for index in 0..self.nodes.len() {
            self.commands(index, &[resp::command(&[b"PING"])], |kind, _| {
                kind == "pong"
            })?;
        }
        Ok(())
    }
}

impl Node {
    /// Connects to `addr` with the seed's credentials; reads block at most
    /// `COMMAND_TIMEOUT` (a read only starts once data is there).
    fn connect(seed: &redis::Client, addr: &str, timeout: Duration) -> RedisResult<Node> {
        let target = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| lost(&format!("{addr}: no address")))?;
        let stream = TcpStream::connect_timeout(&target, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        let mut node = Node {
            addr: addr.to_string(),
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        };
        let settings = seed.get_connection_info().redis_settings();
        if let Some(password) = settings.password() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = settings.username() {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            node.writer.write_all(&resp::command(&args))?;
            match resp::read(&mut node.reader)? {
                Resp::Simple(ok) if ok == "OK" => {}
                // The error text is Redis's (WRONGPASS…), never the password.
                Resp::Error(error) => return Err(lost(&format!("{addr}: {error}"))),
                other => return Err(lost(&format!("{addr}: unexpected {other:?}"))),
            }
        }
        Ok(node)
    }
}

/// A push from `addr`: a message (`Some`), a PING answer (`None`), or a
/// `sunsubscribe` Redis sent on its own: the channel is no longer served here.
fn push(mode: Mode, addr: &str, kind: &str, items: &[Resp]) -> RedisResult<Option<Message>> {
    match (kind, items) {
        (kind, [_, channel, payload]) if kind == mode.message() => {
            match (channel.text(), payload.text()) {
                (Some(channel), Some(payload)) => Ok(Some(Message {
                    channel: channel.to_string(),
                    payload: payload.to_string(),
                })),
                _ => Ok(None),
            }
        }
        ("sunsubscribe", _) if mode == Mode::Sharded => Err(lost(&format!(
            "{addr} dropped shard channel {} (slot moved or failover)",
            items.get(1).and_then(Resp::text).unwrap_or("?")
        ))),
        _ => Ok(None),
    }
}

/// The slot ranges of the cluster and each range's primary (`host:port`), from
/// `CLUSTER SLOTS` on `seed`. An empty host means the seed's own.
fn topology(seed: &redis::Client, timeout: Duration) -> RedisResult<Vec<(u16, u16, String)>> {
    let mut conn = seed.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn)?;
    let seed_host = match seed.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, _) => host.clone(),
        other => other.to_string(),
    };
    let Value::Array(ranges) = reply else {
        return Err(lost("CLUSTER SLOTS: not an array"));
    };
    let mut slots = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(lost("CLUSTER SLOTS: a range is not an array"));
        };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(lost("CLUSTER SLOTS: a range without its primary"));
        };
        let host = match primary.first() {
            Some(Value::BulkString(bytes)) if !bytes.is_empty() => {
                String::from_utf8_lossy(bytes).into_owned()
            }
            _ => seed_host.clone(),
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            return Err(lost("CLUSTER SLOTS: a primary without a port"));
        };
        let (Ok(first), Ok(last)) = (u16::try_from(*first), u16::try_from(*last)) else {
            return Err(lost("CLUSTER SLOTS: a slot out of range"));
        };
        slots.push((first, last, format!("{host}:{port}")));
    }
    Ok(slots)
}

/// The error that ends the feed (the subscriber then starts over).
fn lost(why: &str) -> redis::RedisError {
    io::Error::new(io::ErrorKind::ConnectionAborted, why.to_string()).into()
}
