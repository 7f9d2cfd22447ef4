//! The guards around password checks: a per-account and per-address failure throttle, and a cap on how many
//! Argon2 computations run at once.
//!
//! Every password check (member login, patron login, a password change) asks [`Throttle::begin`] first, which counts it
//! against the login until its [`Checking`] says how it ended; sign-ups and reset requests only [`Throttle::check`]. Keys
//! are the email as typed (normalised), never whether an account exists, so a locked unknown email answers exactly
//! like a locked real one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The throttle's and the hashing cap's settings (from the API's configuration).
#[derive(Debug, Clone, Copy)]
pub struct AuthLimits {
    /// Failures in a row after which an account key is locked for `lock` ...
    pub failures_before_lock: u32,
    /// ... and, for a client address, which sees many people's typos behind one NAT, this many.
    pub ip_failures_before_lock: u32,
    /// How long a lock lasts; also how long a key's failures are remembered.
    pub lock: Duration,
    /// Before the lock, the wait after an account's n-th failure is `backoff_base * 2^(n-1)`.
    pub backoff_base: Duration,
    /// Keys remembered at most (the map is in memory; the stalest go first when it is full).
    pub max_keys: usize,
    /// Argon2 computations at once; the rest queue.
    pub hash_concurrency: usize,
    /// How long a password check waits in that queue before it is refused with `429`.
    pub hash_wait: Duration,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            failures_before_lock: 5,
            ip_failures_before_lock: 50,
            lock: Duration::from_secs(900),
            backoff_base: Duration::from_millis(500),
            max_keys: 100_000,
            hash_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hash_wait: Duration::from_secs(5),
        }
    }
}

/// What a throttle entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// A login by its normalised email; `scope` separates member logins ("") from each operator's patrons.
    Account {
        scope: String,
        email: String,
    },
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// An address's password checks under way ([`Throttle::begin`]): they count towards its limit until they end,
    /// so a burst of checks for many logins from one address cannot all pass while none has failed yet.
    in_flight: u32,
}

/// Who is trying to sign in: the account (whether or not it exists) and the client address, when known.
#[derive(Debug, Clone)]
pub struct Attempt {
    keys: Vec<Key>,
}

impl Attempt {
    /// A member login by email.
    pub fn member(email: &str, client: Option<IpAddr>) -> Self {
        Self::scoped(String::new(), email, client)
    }

    /// A patron login at operator `tenant`.
    pub fn patron(tenant: uuid::Uuid, email: &str, client: Option<IpAddr>) -> Self {
        Self::scoped(tenant.to_string(), email, client)
    }

    fn scoped(scope: String, email: &str, client: Option<IpAddr>) -> Self {
        let mut keys = vec![Key::Account {
            scope,
            email: email.to_owned(),
        }];
        keys.extend(client.map(Key::Ip));
        Self { keys }
    }
}

/// Failed password checks by account and by address, with exponential back-off and a lock. In-process: each API
/// replica counts its own (a load balancer spreading one attacker over N replicas gives N times the budget, still
/// bounded).
#[derive(Clone)]
pub struct Throttle {
    limits: AuthLimits,
    failures: Arc<Mutex<HashMap<Key, Failures>>>,
    hashing: Arc<tokio::sync::Semaphore>,
}

impl Throttle {
    pub fn new(limits: AuthLimits) -> Self {
        Self {
            limits,
            failures: Arc::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(limits.hash_concurrency.max(1))),
        }
    }

    /// How long `key` must still wait, if at all.
    fn wait(&self, key: &Key, f: &Failures, now: Instant) -> Option<Duration> {
        let (threshold, backs_off) = match key {
            Key::Account { .. } => (self.limits.failures_before_lock, true),
            // An address only locks: backing off after one typo would stall everyone behind the same NAT.
            Key::Ip(_) => (self.limits.ip_failures_before_lock, false),
        };
        let blocked_for = if f.count >= threshold {
            self.limits.lock
        } else if !backs_off {
            // Checks under way fill an address's limit for as long as they run: a second is enough to wait.
            return (f.count.saturating_add(f.in_flight) >= threshold)
                .then_some(Duration::from_secs(1));
        } else {
            // Exponential, and never longer than the lock itself.
            let factor = 2u32
                .checked_pow(f.count.saturating_sub(1))
                .unwrap_or(u32::MAX);
            self.limits
                .backoff_base
                .checked_mul(factor)
                .map_or(self.limits.lock, |d| d.min(self.limits.lock))
        };
        let until = f.last + blocked_for;
        (until > now).then(|| until - now)
    }

    /// Refuses with `429 rate_limited` while any key of the attempt is backing off or locked (a sign-up or a reset
    /// request, which checks no password).
    pub fn check(&self, attempt: &Attempt) -> Result<()> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        self.refused(&failures, attempt, Instant::now())
    }

    fn refused(
        &self,
        failures: &HashMap<Key, Failures>,
        attempt: &Attempt,
        now: Instant,
    ) -> Result<()> {
        let wait = attempt
            .keys
            .iter()
            .filter_map(|k| failures.get(k).and_then(|f| self.wait(k, f, now)))
            .max();
        match wait {
            None => Ok(()),
            Some(wait) => {
                metrics::counter!("switchyard_auth_throttled_total").increment(1);
                Err(Error::RateLimited {
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                })
            }
        }
    }

    /// Before a password check: refused as [`Throttle::check`] refuses, else the attempt is counted as a failure of
    /// the login at once, under the same lock, and the check goes on under the returned [`Checking`]: a wrong
    /// password keeps that count ([`Checking::failed`], which also counts it against the address), a right one
    /// clears the login's ([`Checking::succeeded`]), and a check that ends any other way (the database, the hashing
    /// queue, the client gone) takes it back. Counted after the check instead, attempts sent together all passed
    /// while the first was still being hashed, and a login's five tries became as many as the hashing queue let
    /// through. The address is counted only for wrong passwords: many people behind one NAT sign in at once.
    pub fn begin(&self, attempt: &Attempt) -> Result<Checking> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        self.refused(&failures, attempt, now)?;
        let login = Attempt {
            keys: attempt
                .keys
                .iter()
                .filter(|k| matches!(k, Key::Account { .. }))
                .cloned()
                .collect(),
        };
        self.count(&mut failures, &login, now);
        for key in attempt.keys.iter().filter(|k| matches!(k, Key::Ip(_))) {
            failures
                .entry(key.clone())
                .or_insert(Failures {
                    count: 0,
                    last: now,
                    in_flight: 0,
                })
                .in_flight += 1;
        }
        Ok(Checking {
            throttle: self.clone(),
            attempt: attempt.clone(),
            settled: false,
        })
    }

    /// Counts a failure against every key of the attempt.
    fn count(&self, failures: &mut HashMap<Key, Failures>, attempt: &Attempt, now: Instant) {
        for key in &attempt.keys {
            if !failures.contains_key(key) && failures.len() >= self.limits.max_keys {
                self.make_room(failures, now);
            }
            let entry = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
                in_flight: 0,
            });
            // Failures older than the lock are forgiven: the count starts again.
            if now.duration_since(entry.last) >= self.limits.lock {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
    }

    /// A right password clears the account's failures (not the address's: one good login must not buy an address
    /// a fresh budget for guessing other accounts).
    fn succeeded(&self, attempt: &Attempt) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in &attempt.keys {
            if matches!(key, Key::Account { .. }) {
                failures.remove(key);
            }
        }
    }

    /// A check of `attempt` has ended: its addresses' checks under way are one fewer.
    fn ended(&self, attempt: &Attempt) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in attempt.keys.iter().filter(|k| matches!(k, Key::Ip(_))) {
            if let Some(f) = failures.get_mut(key) {
                f.in_flight = f.in_flight.saturating_sub(1);
                if f.count == 0 && f.in_flight == 0 {
                    failures.remove(key);
                }
            }
        }
    }

    /// Takes back the count [`Throttle::begin`] made for a check that ended without an answer.
    fn take_back(&self, attempt: &Attempt) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in &attempt.keys {
            if let (Key::Account { .. }, Some(f)) = (key, failures.get_mut(key)) {
                f.count = f.count.saturating_sub(1);
                if f.count == 0 {
                    failures.remove(key);
                }
            }
        }
    }

    /// Forgets entries past their lock; if the map is still full, the one touched longest ago.
    fn make_room(&self, failures: &mut HashMap<Key, Failures>, now: Instant) {
        failures.retain(|_, f| now.duration_since(f.last) < self.limits.lock);
        if failures.len() >= self.limits.max_keys {
            let stalest = failures
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                failures.remove(&k);
            }
        }
    }

    /// Runs an Argon2 computation on a blocking thread under the concurrency cap, so a flood of logins queues
    /// instead of exhausting memory (each computation holds ~19 MiB); past `hash_wait` in the queue it is refused.
    pub async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit =
            tokio::time::timeout(self.limits.hash_wait, self.hashing.clone().acquire_owned())
                .await
                .map_err(|_| {
                    metrics::counter!("switchyard_auth_hash_refused_total").increment(1);
                    Error::RateLimited {
                        retry_after_secs: 1,
                    }
                })?
                .map_err(|e| Error::Internal(e.into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| Error::Internal(e.into()))?
    }
}

/// A password check under way ([`Throttle::begin`]); dropped without an answer, it takes its count back.
#[must_use = "a check counts until it is answered: keep it, and say failed or succeeded"]
pub struct Checking {
    throttle: Throttle,
    attempt: Attempt,
    settled: bool,
}

impl Checking {
    /// A wrong password (or an unknown email: the same): the login's count stays, and the address's grows.
    pub fn failed(mut self) {
        self.settled = true;
        self.throttle.ended(&self.attempt);
        let ip = Attempt {
            keys: self
                .attempt
                .keys
                .iter()
                .filter(|k| matches!(k, Key::Ip(_)))
                .cloned()
                .collect(),
        };
        let mut failures = self
            .throttle
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.throttle.count(&mut failures, &ip, Instant::now());
    }

    /// The right password: the login's failures are cleared.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.throttle.ended(&self.attempt);
        self.throttle.succeeded(&self.attempt);
    }
}

impl Drop for Checking {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle.ended(&self.attempt);
            self.throttle.take_back(&self.attempt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AuthLimits {
        AuthLimits {
            failures_before_lock: 3,
            ip_failures_before_lock: 5,
            lock: Duration::from_secs(60),
            backoff_base: Duration::ZERO,
            max_keys: 4,
            ..AuthLimits::default()
        }
    }

    #[test]
    fn locks_after_the_threshold_the_same_for_any_email_and_success_clears_the_account() {
        let t = Throttle::new(limits());
        let ip: IpAddr = [203, 0, 113, 9].into();
        let a = Attempt::member("who@example.com", Some(ip));
        for _ in 0..3 {
            t.begin(&a).unwrap().failed();
        }
        let Err(Error::RateLimited { retry_after_secs }) = t.check(&a) else {
            panic!("not locked");
        };
        assert_eq!(retry_after_secs, 60);
        // Another account from the same address is not locked yet (the address allows 5) ...
        let b = Attempt::member("other@example.com", Some(ip));
        t.begin(&b).unwrap().failed();
        t.begin(&b).unwrap().failed();
        // ... but the address is now: 5 failures.
        assert!(t
            .check(&Attempt::member("third@example.com", Some(ip)))
            .is_err());
        // From elsewhere, `who` is still locked (the account key).
        assert!(t.check(&Attempt::member("who@example.com", None)).is_err());
        t.succeeded(&Attempt::member("who@example.com", None));
        assert!(t.check(&Attempt::member("who@example.com", None)).is_ok());
    }

    #[test]
    fn backs_off_exponentially_before_the_lock_and_stays_bounded() {
        let t = Throttle::new(AuthLimits {
            backoff_base: Duration::from_secs(2),
            ..limits()
        });
        let a = Attempt::member("who@example.com", None);
        t.begin(&a).unwrap().failed();
        assert!(matches!(
            t.check(&a),
            Err(Error::RateLimited {
                retry_after_secs: 2
            })
        ));
        t.failures
            .lock()
            .unwrap()
            .get_mut(&a.keys[0])
            .unwrap()
            .count += 1;
        assert!(matches!(
            t.check(&a),
            Err(Error::RateLimited {
                retry_after_secs: 4
            })
        ));
        for i in 0..10 {
            t.begin(&Attempt::member(&format!("{i}@example.com"), None))
                .unwrap()
                .failed();
        }
        assert!(t.failures.lock().unwrap().len() <= 4);
    }

    /// Twenty password checks for one login sent together: the first is counted before it is hashed, so the rest
    /// wait for its back-off; a right password clears it, and costs the address nothing; a check that ends without
    /// an answer (the database, the hashing queue) takes its count back.
    #[test]
    fn attempts_sent_together_are_counted_before_they_are_checked() {
        let t = Throttle::new(AuthLimits {
            backoff_base: Duration::from_secs(1),
            max_keys: 100,
            ..limits()
        });
        let ip: IpAddr = [203, 0, 113, 7].into();
        let a = Attempt::member("who@example.com", Some(ip));
        let first = t.begin(&a).unwrap();
        let passed = (0..19).filter(|_| t.begin(&a).is_ok()).count();
        assert_eq!(passed, 0, "one check at a time for a login");
        first.succeeded();
        t.begin(&a).unwrap().succeeded();
        assert!(!t.failures.lock().unwrap().contains_key(&Key::Ip(ip)));
        drop(t.begin(&a).unwrap());
        let count = |k: &Key| t.failures.lock().unwrap().get(k).map(|f| f.count);
        assert_eq!(count(&a.keys[0]), None, "taken back");
        assert!(t.check(&a).is_ok());
        // Checks for many logins from one address: those under way fill its limit (5) until they end.
        let under_way: Vec<Checking> = (0..8)
            .filter_map(|i| {
                t.begin(&Attempt::member(&format!("{i}@example.com"), Some(ip)))
                    .ok()
            })
            .collect();
        assert_eq!(under_way.len(), 5);
        drop(under_way);
        assert!(t.begin(&a).is_ok(), "ended checks free the address");
    }
}
