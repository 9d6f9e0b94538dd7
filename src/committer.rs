//! Group commit: creates that arrive together are stored in one statement (one
//! commit) and published to Redis in one pipeline, then each caller gets its answer.
//!
//! Sits between `api` (which validated the notifications) and `store` + `publisher`.
//! A lone create pays nothing extra but a hand-off to a committer thread; under load
//! the commit cost, the dominant cost of a create, is shared by everyone waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::error::Error;
use crate::events::{CounterRow, StateMessage};
use crate::metrics::METRICS;
use crate::notification::Notification;
use crate::publisher::{Message, Publisher};
use crate::store::Store;

/// Most rows one commit takes.
const MAX_ROWS: usize = 1000;
/// Creates waiting for a committer; senders block beyond this (REST workers are few).
const QUEUE: usize = 1024;
/// Committer threads: one commits while the other gathers the next group.
const THREADS: usize = 2;

/// Validated notifications with their JSON, serialized once for Redis and the reply
/// (shared, not copied: `Arc::new` takes the validator's `String` as it is).
pub struct Ready {
    pub notification: Notification,
    pub json: Arc<String>,
}

struct Job {
    items: Vec<Ready>,
    answer: Arc<Answer>,
}

impl Job {
    fn answer(&self, result: Result<(), Error>) {
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
    result: Mutex<Option<Result<(), Error>>>,
    ready: Condvar,
}

impl Answer {
    /// Sets the result; only the first call counts.
    fn give(&self, result: Result<(), Error>) {
        let mut slot = self.result.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(result);
            self.ready.notify_one();
        }
    }

    fn wait(&self) -> Result<(), Error> {
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
}

impl Committer {
    /// Starts the committer threads.
    pub fn start(
        store: Store,
        publisher: Publisher,
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
                move || run(&store, &publisher, &queue),
            )?);
        }
        Ok((Committer { jobs }, threads))
    }

    /// Stores and publishes `items` (all or none), returning once they are committed.
    pub fn commit(&self, items: Vec<Ready>) -> Result<(), Error> {
        let answer = Arc::new(Answer::default());
        // A failed send drops the job, which answers "committer stopped".
        let _ = self.jobs.send(Job {
            items,
            answer: answer.clone(),
        });
        answer.wait()
    }
}

fn run(store: &Store, publisher: &Publisher, queue: &Receiver<Job>) {
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
        commit_group(store, publisher, jobs);
    }
}

/// Commits a group of jobs; if the group fails as a whole, each job is tried alone so
/// one bad job cannot sink the others.
fn commit_group(store: &Store, publisher: &Publisher, jobs: Vec<Job>) {
    let rows: Vec<&Notification> = jobs
        .iter()
        .flat_map(|job| job.items.iter().map(|item| &item.notification))
        .collect();
    match store.insert(&rows) {
        Ok(()) => {
            publish(publisher, &jobs);
            let pairs = counter_pairs(&rows);
            drop(rows);
            for job in &jobs {
                job.answer(Ok(()));
            }
            publish_counts(store, publisher, &pairs);
        }
        // Alone or with PostgreSQL unreachable, retrying job by job cannot help: every
        // job gets the error at once.
        Err(err) if jobs.len() == 1 || matches!(err, Error::Unavailable { .. }) => {
            drop(rows);
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
            drop(rows);
            for job in jobs {
                let alone: Vec<&Notification> = job.items.iter().map(|i| &i.notification).collect();
                let result = store.insert(&alone);
                let committed = result.is_ok();
                if committed {
                    publish(publisher, std::slice::from_ref(&job));
                }
                job.answer(result);
                if committed {
                    publish_counts(store, publisher, &counter_pairs(&alone));
                }
            }
        }
    }
}

/// Publishes every committed notification. A Redis failure never fails the create:
/// the rows are stored, and the publisher deals with the outage (it never makes a
/// create wait on a Redis it knows is down).
fn publish(publisher: &Publisher, jobs: &[Job]) {
    let messages: Vec<Message<'_>> = jobs
        .iter()
        .flat_map(|job| job.items.iter())
        .map(|item| (item.notification.user_id.as_str(), &item.json))
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
        .map(|n| (n.user_id.as_str(), n.workspace.as_deref()))
        .collect();
    pairs
        .into_iter()
        .map(|(user, workspace)| (user.to_string(), workspace.map(str::to_string)))
        .collect()
}

/// Tells the instances the counters a group of creates moved (`counts` events), after
/// its notifications were published and its callers answered: neither the create nor
/// the delivery waits for it. The rows are read just after the commit, each with its
/// version, so a consumer orders them against every other state message. A failure
/// costs only these events: the counters themselves were committed with the rows.
fn publish_counts(store: &Store, publisher: &Publisher, pairs: &[(String, Option<String>)]) {
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
    for (user, row) in rows {
        by_user.entry(user).or_default().push(row);
    }
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
