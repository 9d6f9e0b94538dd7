//! Group commit: creates that arrive together are stored in one statement (one
//! commit) and published to Redis in one pipeline, then each caller gets its answer.
//!
//! Sits between `api` (which validated the notifications) and `store` + `publisher`.
//! A lone create pays nothing extra but a hand-off to a committer thread; under load
//! the commit cost, the dominant cost of a create, is shared by everyone waiting.
//!
//! A group holding an idempotency key is stored by `Store::insert_keyed` instead:
//! a repeat of a key is answered with the original (`Outcome::Replayed`) and is
//! neither stored nor published; a create that reuses a key for another request is
//! refused (409) and the rest of its group stored without it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::config::Config;
use crate::error::Error;
use crate::events::{CounterRow, StateMessage};
use crate::metrics::METRICS;
use crate::notification::Notification;
use crate::publisher::{Message, Publisher};
use crate::store::{IdempotencyKey, Store};

mod keyed;

/// Most rows one commit takes.
const MAX_ROWS: usize = 1000;
/// Creates waiting for a committer; senders block beyond this (REST workers are few).
const QUEUE: usize = 1024;
/// Committer threads: one commits while the other gathers the next group.
const THREADS: usize = 2;

/// What a create is checked against beyond its own fields, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How long an idempotency key is honoured (`NOTIFD_IDEMPOTENCY_WINDOW`).
    pub idempotency_window: Duration,
    /// The retention period, when one is set: the furthest `expires_at` may be.
    pub retention: Option<Duration>,
}

impl Policy {
    pub fn of(config: &Config) -> Policy {
        Policy {
            idempotency_window: config.idempotency_window,
            retention: config
                .retention_days
                .map(|days| Duration::from_secs(u64::from(days) * 86_400)),
        }
    }
}

/// Validated notifications with their JSON, serialized once for Redis and the reply
/// (shared, not copied: `Arc::new` takes the validator's `String` as it is), and the
/// idempotency key the create carried, if any.
pub struct Ready {
    pub notification: Notification,
    pub json: Arc<String>,
    pub key: Option<IdempotencyKey>,
}

/// How one item of a create was answered.
#[derive(Debug)]
pub enum Outcome {
    /// Stored and published now: the answer is the item's own JSON.
    Stored,
    /// Its idempotency key was used before for this request: nothing stored, the
    /// answer is the original notification.
    Replayed(Arc<String>),
}

/// What a job is answered with: one outcome per item, in order.
type Outcomes = Result<Vec<Outcome>, Error>;

struct Job {
    items: Vec<Ready>,
    answer: Arc<Answer>,
}

impl Job {
    fn answer(&self, result: Outcomes) {
        self.answer.give(result);
    }
}

impl Drop for Job {
    // A job dropped unanswered (its committer stopped) must still wake its worker.
    fn drop(&mut self) {
        self.answer
            .give(Err(Error::Internal("committer stopped".into())));
    }
}

/// The answer a REST worker sleeps on. A condition variable parks the worker at once,
/// where a channel receive first spins and yields: measured as 12% of the server's CPU
/// with 16 workers waiting on group commits.
#[derive(Default)]
struct Answer {
    result: Mutex<Option<Outcomes>>,
    ready: Condvar,
}

impl Answer {
    /// Sets the result; only the first call counts.
    fn give(&self, result: Outcomes) {
        let mut slot = self.result.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(result);
            self.ready.notify_one();
        }
    }

    fn wait(&self) -> Outcomes {
        let mut result = self.result.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(result) = result.take() {
                return result;
            }
            result = self.ready.wait(result).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A handle on the committer threads; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    jobs: Sender<Job>,
    policy: Policy,
}

impl Committer {
    /// Starts the committer threads.
    pub fn start(
        store: Store,
        publisher: Publisher,
        policy: Policy,
    ) -> std::io::Result<(Committer, Vec<JoinHandle<()>>)> {
        let (jobs, queue) = bounded(QUEUE);
        let mut threads = Vec::with_capacity(THREADS);
        for i in 0..THREADS {
            let (store, publisher, queue) = (store.clone(), publisher.clone(), queue.clone());
            // Essential (a panic ends the process); a return is expected: it
            // means the queue closed, its owner gone.
            threads.push(crate::supervise::spawn_essential(
                format!("notifd-commit-{i}"),
                512 * 1024,
                || true,
                move || run(&store, &publisher, policy, &queue),
            )?);
        }
        Ok((Committer { jobs, policy }, threads))
    }

    /// What creates are checked against.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Stores and publishes `items` (all or none), returning once they are committed:
    /// one outcome per item.
    pub fn commit(&self, items: Vec<Ready>) -> Outcomes {
        let answer = Arc::new(Answer::default());
        // A failed send drops the job, which answers "committer stopped".
        let _ = self.jobs.send(Job {
            items,
            answer: answer.clone(),
        });
        answer.wait()
    }
}

fn run(store: &Store, publisher: &Publisher, policy: Policy, queue: &Receiver<Job>) {
    loop {
        // Ends when every `Committer` is gone (the REST workers have finished), not at
        // the shutdown signal: in-flight creates still get committed.
        let Ok(first) = queue.recv() else {
            return;
        };
        let mut jobs = vec![first];
        let mut rows = jobs[0].items.len();
        while rows < MAX_ROWS {
            match queue.try_recv() {
                Ok(job) => {
                    rows += job.items.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        commit_group(store, publisher, policy, jobs);
    }
}

/// Commits a group of jobs; if the group fails as a whole, each job is tried alone so
/// one bad job cannot sink the others.
fn commit_group(store: &Store, publisher: &Publisher, policy: Policy, jobs: Vec<Job>) {
    match store_jobs(store, policy, &jobs) {
        Ok(results) => finish(store, publisher, &jobs, results),
        // Alone or with PostgreSQL unreachable, retrying job by job cannot help: every
        // job gets the error at once.
        Err(err) if jobs.len() == 1 || matches!(err, Error::Unavailable { .. }) => {
            let message = err.to_string();
            let mut jobs = jobs.into_iter();
            if let Some(first) = jobs.next() {
                first.answer(Err(err));
            }
            for job in jobs {
                job.answer(Err(Error::Unavailable {
                    dependency: "postgresql",
                    detail: message.clone(),
                }));
            }
        }
        Err(_) => {
            for job in jobs {
                let job = [job];
                match store_jobs(store, policy, &job) {
                    Ok(results) => finish(store, publisher, &job, results),
                    Err(err) => job[0].answer(Err(err)),
                }
            }
        }
    }
}

/// Stores the jobs' notifications in one transaction: the result of each job, or the
/// error of the whole group. Without an idempotency key in the group, one INSERT.
fn store_jobs(store: &Store, policy: Policy, jobs: &[Job]) -> Result<Vec<Outcomes>, Error> {
    let items: Vec<&Ready> = jobs.iter().flat_map(|job| job.items.iter()).collect();
    let rows: Vec<&Notification> = items.iter().map(|item| &item.notification).collect();
    if items.iter().all(|item| item.key.is_none()) {
        store.insert(&rows)?;
        return Ok(jobs.iter().map(|job| Ok(stored(job.items.len()))).collect());
    }
    keyed::store(store, policy.idempotency_window, jobs, &items)
}

fn stored(n: usize) -> Vec<Outcome> {
    (0..n).map(|_| Outcome::Stored).collect()
}

/// Publishes what a committed group stored, answers every job, then publishes the
/// counter rows the stored rows moved.
fn finish(store: &Store, publisher: &Publisher, jobs: &[Job], results: Vec<Outcomes>) {
    let mut published: Vec<&Ready> = Vec::new();
    for (job, result) in jobs.iter().zip(&results) {
        if let Ok(outcomes) = result {
            published.extend(
                job.items
                    .iter()
                    .zip(outcomes)
                    .filter(|(_, outcome)| matches!(outcome, Outcome::Stored))
                    .map(|(item, _)| item),
            );
        }
    }
    publish(publisher, &published);
    let rows: Vec<&Notification> = published.iter().map(|item| &item.notification).collect();
    let pairs = counter_pairs(&rows);
    for (job, result) in jobs.iter().zip(results) {
        job.answer(result);
    }
    publish_counts(store, publisher, &pairs);
}

/// Publishes every committed notification. A Redis failure never fails the create:
/// the rows are stored, and the publisher deals with the outage (it never makes a
/// create wait on a Redis it knows is down).
fn publish(publisher: &Publisher, items: &[&Ready]) {
    if items.is_empty() {
        return;
    }
    let messages: Vec<Message<'_>> = items
        .iter()
        .map(|item| (&item.notification, &item.json))
        .collect();
    METRICS
        .notifications_created
        .fetch_add(messages.len() as u64, Ordering::Relaxed);
    publisher.publish_many(&messages);
}

/// The distinct (user, workspace or user-level) counter rows that `rows` moved.
fn counter_pairs(rows: &[&Notification]) -> Vec<(String, Option<String>)> {
    let pairs: BTreeSet<(&str, Option<&str>)> = rows
        .iter()
        // A workspace audience moves its workspace's broadcasts row ('', slug).
        .map(|n| (n.user_id.as_deref().unwrap_or(""), n.workspace.as_deref()))
        .collect();
    pairs
        .into_iter()
        .map(|(user, workspace)| (user.to_string(), workspace.map(str::to_string)))
        .collect()
}

/// Tells the instances the counters a group of creates (or the expiry thread,
/// `retention`) moved (`counts` events), after
/// its notifications were published and its callers answered: neither the create nor
/// the delivery waits for it. The rows are read just after the commit, each with its
/// version, so a consumer orders them against every other state message. A failure
/// costs only these events: the counters themselves were committed with the rows.
pub(crate) fn publish_counts(
    store: &Store,
    publisher: &Publisher,
    pairs: &[(String, Option<String>)],
) {
    if pairs.is_empty() {
        return;
    }
    let keys: Vec<(&str, Option<&str>)> = pairs
        .iter()
        .map(|(user, workspace)| (user.as_str(), workspace.as_deref()))
        .collect();
    let rows = match store.counter_rows_of(&keys) {
        Ok(rows) => rows,
        Err(err) => {
            log::warn!(error = err.to_string().as_str(); "counts after creates not published");
            return;
        }
    };
    let mut by_user: BTreeMap<String, Vec<CounterRow>> = BTreeMap::new();
    let mut broadcasts = Vec::new();
    for (user, row) in rows {
        match row.broadcasts {
            true => broadcasts.push(row),
            false => by_user.entry(user).or_default().push(row),
        }
    }
    publisher.publish_workspace_counts(broadcasts);
    let messages: Vec<StateMessage> = by_user
        .into_iter()
        .map(|(user_id, counters)| StateMessage {
            user_id,
            change: None,
            counters,
        })
        .collect();
    publisher.publish_states(&messages);
}
