//! The keyed part of a group commit: a group in which some create carries an
//! idempotency key is stored by `Store::insert_keyed`, which may refuse creates that
//! reuse a key for another request; those jobs are answered 409 and the rest of the
//! group is stored again without them (all or none per job, never per row).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Job, Outcome, Outcomes, Ready};
use crate::error::Error;
use crate::notification::Notification;
use crate::store::{Claim, Created, IdempotencyKey, Store};

/// Stores the group's rows (`items`, the jobs' items in order) in one transaction,
/// honouring keys younger than `window`: each job's outcomes or refusal, or the
/// error of the whole group.
pub(super) fn store(
    store: &Store,
    window: Duration,
    jobs: &[Job],
    items: &[&Ready],
) -> Result<Vec<Outcomes>, Error> {
    let rows: Vec<&Notification> = items.iter().map(|item| &item.notification).collect();
    let keys: Vec<Option<&IdempotencyKey>> = items.iter().map(|item| item.key.as_ref()).collect();
    // The job of each row; a job refused for a conflict leaves the group, and the
    // rest is stored again (each turn refuses at least one job: bounded).
    let owner: Vec<usize> = (0..jobs.len())
        .flat_map(|j| std::iter::repeat_n(j, jobs[j].items.len()))
        .collect();
    let mut refused: BTreeMap<usize, Error> = BTreeMap::new();
    // Without a batch that has keys, a conflict concerns one create's one row, which
    // was not stored: nothing to roll back, so the group commits as one statement.
    let atomic = jobs
        .iter()
        .any(|job| job.items.len() > 1 && job.items.iter().any(|item| item.key.is_some()));
    loop {
        let kept: Vec<usize> = (0..rows.len())
            .filter(|i| !refused.contains_key(&owner[*i]))
            .collect();
        if kept.is_empty() {
            break;
        }
        let kept_rows: Vec<&Notification> = kept.iter().map(|&i| rows[i]).collect();
        let kept_keys: Vec<Option<&IdempotencyKey>> = kept.iter().map(|&i| keys[i]).collect();
        match store.insert_keyed(&kept_rows, &kept_keys, window, atomic)? {
            Created::Conflicts(at) => {
                for i in at.into_iter().map(|k| kept[k]) {
                    refused
                        .entry(owner[i])
                        .or_insert_with(|| conflict(jobs, &owner, i, items));
                }
            }
            Created::Committed(claims) => {
                return Ok(outcomes(jobs, &owner, &kept, items, claims, refused));
            }
        }
    }
    Ok((0..jobs.len())
        .map(|j| Err(take(&mut refused, j)))
        .collect())
}

/// The 409 of a job whose row `i` reused a key for another request.
fn conflict(jobs: &[Job], owner: &[usize], i: usize, items: &[&Ready]) -> Error {
    let first_of_job = owner.iter().position(|&o| o == owner[i]).unwrap_or(i);
    let key = items[i].key.as_ref().map_or("", |k| k.key.as_str());
    let item = if jobs[owner[i]].items.len() > 1 {
        format!("notifications[{}]: ", i - first_of_job)
    } else {
        String::new()
    };
    Error::IdempotencyConflict(format!(
        "{item}idempotency key {key:?} was already used for a different request"
    ))
}

fn take(refused: &mut BTreeMap<usize, Error>, job: usize) -> Error {
    refused
        .remove(&job)
        .unwrap_or_else(|| Error::Internal(format!("job {job} has no result")))
}

/// Each job's result after a committed keyed group: the claims of its rows as
/// outcomes, or its refusal.
fn outcomes(
    jobs: &[Job],
    owner: &[usize],
    kept: &[usize],
    items: &[&Ready],
    claims: Vec<Claim>,
    mut refused: BTreeMap<usize, Error>,
) -> Vec<Outcomes> {
    let mut results: Vec<Outcomes> = (0..jobs.len())
        .map(|j| match refused.contains_key(&j) {
            true => Err(take(&mut refused, j)),
            false => Ok(Vec::with_capacity(jobs[j].items.len())),
        })
        .collect();
    for (k, claim) in claims.into_iter().enumerate() {
        let i = kept[k];
        let outcome = match claim {
            Claim::Stored => Outcome::Stored,
            Claim::SameAs(first) => Outcome::Replayed(items[kept[first]].json.clone()),
            Claim::Replayed(original) => Outcome::Replayed(Arc::new(original.to_json())),
            // Only of a one-row create (see `store`): nothing of it was stored.
            Claim::Conflict => {
                results[owner[i]] = Err(conflict(jobs, owner, i, items));
                continue;
            }
            Claim::Failed(err) => {
                results[owner[i]] = Err(err);
                continue;
            }
        };
        if let Ok(list) = &mut results[owner[i]] {
            list.push(outcome);
        }
    }
    results
}
