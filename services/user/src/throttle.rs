//! Login throttling: a rate limit per client address (every attempt costs an argon2 hash, so an
//! address gets a budget of attempts) and one per username (failed attempts only, so guessing
//! one account's password is slow from any number of addresses, while the owner's successful
//! login clears the slate).
//!
//! A failure is charged to the username when its answer is about to be sent, so only failures a
//! client stayed to see count: a flood of aborted attempts against a name (its clients hang up)
//! does not lock the owner out, while a guesser has to read each answer, so every guess counts.
//! The price is a gap between the check and the charge: concurrent guesses can pass the check
//! before the first failure is charged, at most the attempts in flight (hash workers + queue,
//! each also within its address's limit). A client on loopback has no address limit (see
//! [`LoginThrottle::admit`]).
//!
//! Both limits are GCRA token buckets ("one attempt back every `refill`, at most `burst` in a
//! row"), kept in a table of fixed size in bytes: keys are 64-bit keyed hashes (a username of any
//! length costs the same 24 bytes), the table is two generations allocated once, and when the
//! current one is full the older is dropped whole. A key not touched for a whole generation is
//! forgotten (its bucket has usually refilled by then); a flood of new keys can make the table
//! forget early, which at worst gives a throttled client its burst back, never unbounded memory.
//!
//! # Which address is the client's
//!
//! Behind the gateway the TCP peer is the gateway. The gateway appends the address it saw to
//! `X-Forwarded-For`, so the client is the *rightmost* entry a trusted hop added: the header is
//! read only when the peer is trusted (loopback, or listed in `USER_TRUSTED_PROXIES`), from the
//! right, skipping entries that are themselves trusted proxies. Entries to the left of the first
//! untrusted one were written by the client and could say anything, so they are never used. From
//! an untrusted peer the header is ignored and the peer is the client. IPv6 clients are limited
//! per /64 (what one subscriber gets), IPv4-mapped addresses as IPv4.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderMap;
use obskit::metrics::{CounterVec, Registry};
use obskit::settings::{EnvError, EnvSource};

/// Environment variable: login attempts one client address may make in a row.
pub const ADDRESS_BURST_ENV: &str = "USER_LOGIN_ADDRESS_BURST";
/// Environment variable: how long until an address gets one attempt back (`2s`, `500ms`).
pub const ADDRESS_REFILL_ENV: &str = "USER_LOGIN_ADDRESS_REFILL";
/// Environment variable: failed logins one username may take in a row.
pub const USERNAME_BURST_ENV: &str = "USER_LOGIN_USERNAME_BURST";
/// Environment variable: how long until a username gets one failed attempt back.
pub const USERNAME_REFILL_ENV: &str = "USER_LOGIN_USERNAME_REFILL";
/// Environment variable: bytes each limiter's table may use.
pub const TABLE_BYTES_ENV: &str = "USER_LOGIN_LIMITER_BYTES";
/// Environment variable: comma-separated addresses of proxies whose `X-Forwarded-For` is
/// believed (loopback always is).
pub const TRUSTED_PROXIES_ENV: &str = "USER_TRUSTED_PROXIES";

/// The reasons counted in `user_auth_throttled_total{reason}`.
pub const REASON_ADDRESS: &str = "client_address";
/// See [`REASON_ADDRESS`].
pub const REASON_USERNAME: &str = "username";

/// Smallest table accepted: 64 buckets.
const MIN_TABLE_BYTES: usize = 4 * 1024;
/// Largest table accepted: a typo beyond that, not a deployment.
const MAX_TABLE_BYTES: usize = 1 << 30;

/// What one bucket of a table costs: the key, its theoretical arrival time, one control byte.
const BUCKET_BYTES: usize = std::mem::size_of::<(u64, Instant)>() + 1;

/// "At most `burst` in a row, then one more every `refill`."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Attempts allowed in a row from a full bucket (at least 1).
    pub burst: u32,
    /// Time for one attempt to come back.
    pub refill: Duration,
}

impl Rate {
    /// How far ahead of now a key's theoretical arrival time may be and still be admitted.
    fn tolerance(&self) -> Duration {
        self.refill * self.burst.saturating_sub(1)
    }
}

/// The login limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Every login attempt from one client address.
    pub per_address: Rate,
    /// Failed login attempts for one username (case-insensitive, known or not).
    pub per_username: Rate,
    /// Bytes each of the two tables may use.
    pub table_bytes: usize,
    /// Peers whose `X-Forwarded-For` is believed, besides loopback.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for LoginLimits {
    /// Per address 30 in a row, then one every 2 s (30 a minute: a household or an office
    /// behind one NAT logs in far less); per username 5 failures in a row, then one every 30 s
    /// (a user who mistypes a few times is not locked out, a guesser gets 2 a minute); 1 MiB per
    /// table (tens of thousands of keys).
    fn default() -> LoginLimits {
        LoginLimits {
            per_address: Rate {
                burst: 30,
                refill: Duration::from_secs(2),
            },
            per_username: Rate {
                burst: 5,
                refill: Duration::from_secs(30),
            },
            table_bytes: 1024 * 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

impl LoginLimits {
    /// The limits from the `USER_LOGIN_*` variables and `USER_TRUSTED_PROXIES`, the defaults
    /// where unset.
    pub fn from_env(env: &impl EnvSource) -> Result<LoginLimits, EnvError> {
        let defaults = LoginLimits::default();
        let rate = |burst_env: &'static str, refill_env: &'static str, default: Rate| {
            let burst = env.parse::<u32>(burst_env)?.unwrap_or(default.burst);
            if burst == 0 {
                return Err(EnvError::new(burst_env, "must be at least 1"));
            }
            let refill = env.duration(refill_env)?.unwrap_or(default.refill);
            if refill.is_zero() {
                return Err(EnvError::new(refill_env, "must be longer than 0"));
            }
            Ok(Rate { burst, refill })
        };
        let table_bytes = env
            .parse::<usize>(TABLE_BYTES_ENV)?
            .unwrap_or(defaults.table_bytes);
        if !(MIN_TABLE_BYTES..=MAX_TABLE_BYTES).contains(&table_bytes) {
            return Err(EnvError::new(
                TABLE_BYTES_ENV,
                format!("must be {MIN_TABLE_BYTES} to {MAX_TABLE_BYTES}"),
            ));
        }
        let trusted_proxies = match env.get(TRUSTED_PROXIES_ENV) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>().map_err(|_| {
                        EnvError::new(TRUSTED_PROXIES_ENV, format!("`{s}` is not an IP address"))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(LoginLimits {
            per_address: rate(ADDRESS_BURST_ENV, ADDRESS_REFILL_ENV, defaults.per_address)?,
            per_username: rate(USERNAME_BURST_ENV, USERNAME_REFILL_ENV, defaults.per_username)?,
            table_bytes,
            trusted_proxies,
        })
    }
}

/// A refused attempt: why, and when to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// [`REASON_ADDRESS`] or [`REASON_USERNAME`].
    pub reason: &'static str,
    /// How long until the next attempt will be admitted.
    pub retry_after: Duration,
}

/// Two generations of `key → theoretical arrival time`, each allocated once at its full size.
struct Generations {
    current: HashMap<u64, Instant>,
    previous: HashMap<u64, Instant>,
    /// Keys one generation holds before it is rotated out.
    per_generation: usize,
}

impl Generations {
    fn new(table_bytes: usize) -> Generations {
        // A hash map with `n` buckets holds 7/8 n keys without growing; a power of two of
        // buckets per generation, two generations within `table_bytes`.
        let fit = (table_bytes / 2 / BUCKET_BYTES).max(16);
        let buckets = 1usize << (usize::BITS - 1 - fit.leading_zeros());
        let per_generation = buckets / 8 * 7;
        Generations {
            current: HashMap::with_capacity(per_generation),
            previous: HashMap::with_capacity(per_generation),
            per_generation,
        }
    }

    fn get(&self, key: u64) -> Option<Instant> {
        self.current
            .get(&key)
            .or_else(|| self.previous.get(&key))
            .copied()
    }

    /// Nothing is ever removed from a generation: removals leave tombstones, and a map full of
    /// them rehashes into a larger allocation. A key moved to the current generation stays
    /// behind, shadowed, in the previous one until that is dropped.
    fn set(&mut self, key: u64, tat: Instant) {
        if let Some(slot) = self.current.get_mut(&key) {
            *slot = tat;
            return;
        }
        if self.current.len() >= self.per_generation {
            // The older generation goes whole; the allocations are reused, never grown.
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.insert(key, tat);
    }

    /// Gives `key` a full bucket (an arrival time of now) where it is, without removing it.
    fn reset(&mut self, key: u64, now: Instant) {
        for map in [&mut self.current, &mut self.previous] {
            if let Some(slot) = map.get_mut(&key) {
                *slot = now;
            }
        }
    }

    /// The bytes the two tables' buckets take (estimated from their capacities).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        let buckets = |map: &HashMap<u64, Instant>| (map.capacity() / 7 * 8).next_power_of_two();
        (buckets(&self.current) + buckets(&self.previous)) * BUCKET_BYTES
    }
}

/// One GCRA rate limit over a bounded table of keys.
pub struct Limiter {
    rate: Rate,
    table: Mutex<Generations>,
    /// Keyed per process, so that a client cannot pick keys that collide.
    hasher: RandomState,
}

impl Limiter {
    /// A limiter of `rate` whose table uses at most about `table_bytes`.
    pub fn new(rate: Rate, table_bytes: usize) -> Limiter {
        Limiter {
            rate,
            table: Mutex::new(Generations::new(table_bytes)),
            hasher: RandomState::new(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, parts: impl FnOnce(&mut dyn Hasher)) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        parts(&mut hasher);
        hasher.finish()
    }

    /// How long `key` must wait before it is admitted; `None` when it may go now.
    fn wait(&self, tat: Option<Instant>, now: Instant) -> Option<Duration> {
        let ahead = tat?.saturating_duration_since(now);
        ahead
            .checked_sub(self.rate.tolerance())
            .filter(|wait| !wait.is_zero())
    }

    /// Whether `key` may go now, without using an attempt: `Err(wait)` if not.
    pub fn check(&self, key: u64, now: Instant) -> Result<(), Duration> {
        match self.wait(self.table().get(key), now) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Uses one attempt of `key` if it may go now; `Err(wait)` (and nothing used) if not.
    pub fn take(&self, key: u64, now: Instant) -> Result<(), Duration> {
        let mut table = self.table();
        let tat = table.get(key);
        if let Some(wait) = self.wait(tat, now) {
            return Err(wait);
        }
        table.set(key, tat.map_or(now, |t| t.max(now)) + self.rate.refill);
        Ok(())
    }

    /// Uses one attempt of `key` whether or not it had one left (for a failure seen after the
    /// check), at most down to an empty bucket: debt does not pile up beyond one refill.
    pub fn charge(&self, key: u64, now: Instant) {
        let mut table = self.table();
        let ceiling = now + self.rate.tolerance() + self.rate.refill;
        let tat = table.get(key).map_or(now, |t| t.max(now)) + self.rate.refill;
        table.set(key, tat.min(ceiling));
    }

    /// Gives `key` its full burst back.
    pub fn forget(&self, key: u64) {
        self.table().reset(key, Instant::now());
    }

    /// The bytes the table takes; fixed from the start.
    #[cfg(test)]
    pub fn table_bytes(&self) -> usize {
        self.table().bytes()
    }
}

/// The address a request came from, as the rate limit sees it (see the module docs).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> IpAddr {
    let trusted = |ip: &IpAddr| ip.is_loopback() || trusted_proxies.contains(ip);
    if !trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Header lines in order, each a comma-separated list: the last entry of the last line is
    // what the nearest hop added.
    let lines: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map_while(|v| v.to_str().ok())
        .collect();
    for entry in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
        let entry = entry.trim();
        let parsed = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()));
        // An entry that is not an address: the hop before it wrote something we cannot
        // trust further; the client is the last good entry.
        let Some(ip) = parsed else { break };
        client = ip;
        if !trusted(&ip) {
            break;
        }
    }
    client
}

/// The part of an address a limit counts: IPv4 whole, IPv6 by its /64.
fn address_bucket(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_ipv6_mapped().octets(),
            None => {
                let segments = v6.segments();
                Ipv6Addr::new(segments[0], segments[1], segments[2], segments[3], 0, 0, 0, 0).octets()
            }
        },
    }
}

/// The login throttle: both limits, and `user_auth_throttled_total{reason}`.
pub struct LoginThrottle {
    by_address: Limiter,
    by_username: Limiter,
    trusted_proxies: Vec<IpAddr>,
    throttled: CounterVec,
}

impl LoginThrottle {
    /// The throttle of `limits`; declares `user_auth_throttled_total{reason}` in `registry`.
    pub fn new(limits: &LoginLimits, registry: &Registry) -> Result<LoginThrottle, obskit::metrics::Error> {
        use crate::USER_AUTH_THROTTLED_TOTAL as THROTTLED;
        let throttled = registry.counter_vec(THROTTLED.name, THROTTLED.help, THROTTLED.labels)?;
        for reason in [REASON_ADDRESS, REASON_USERNAME] {
            throttled.with(&[reason]);
        }
        Ok(LoginThrottle {
            by_address: Limiter::new(limits.per_address, limits.table_bytes),
            by_username: Limiter::new(limits.per_username, limits.table_bytes),
            trusted_proxies: limits.trusted_proxies.clone(),
            throttled,
        })
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_address(peer, headers, &self.trusted_proxies)
    }

    fn address_key(&self, client: IpAddr) -> u64 {
        self.by_address.key(|h| h.write(&address_bucket(client)))
    }

    /// Usernames are unique case-insensitively, so `Ann` and `ann` share a bucket.
    fn username_key(&self, username: &str) -> u64 {
        self.by_username.key(|h| {
            for byte in username.bytes() {
                h.write_u8(byte.to_ascii_lowercase());
            }
        })
    }

    /// Admits a login attempt (using one of the address's attempts) or refuses it. A username
    /// is checked the same way whether it exists or not, so a 429 tells nothing about which
    /// names are taken. A client on loopback has no address limit (its username limit still
    /// applies): it is a process on this host (the load test, a script), which could reach the
    /// service without the gateway anyway, and 100 Locust users logging in from one address
    /// must not be told to wait.
    pub fn admit(&self, client: IpAddr, username: &str) -> Result<(), Throttled> {
        let now = Instant::now();
        let refuse = |reason: &'static str, wait: Duration| {
            self.throttled.with(&[reason]).inc();
            Throttled {
                reason,
                retry_after: wait,
            }
        };
        self.by_username
            .check(self.username_key(username), now)
            .map_err(|wait| refuse(REASON_USERNAME, wait))?;
        if client.is_loopback() {
            return Ok(());
        }
        self.by_address
            .take(self.address_key(client), now)
            .map_err(|wait| refuse(REASON_ADDRESS, wait))
    }

    /// Counts a failed attempt against the username.
    pub fn failed(&self, username: &str) {
        self.by_username
            .charge(self.username_key(username), Instant::now());
    }

    /// The owner got in: earlier failures (a guesser's, or typos) no longer count.
    pub fn succeeded(&self, username: &str) {
        self.by_username.forget(self.username_key(username));
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn rate(burst: u32, refill_secs: u64) -> Rate {
        Rate {
            burst,
            refill: Duration::from_secs(refill_secs),
        }
    }

    #[test]
    fn a_burst_then_one_per_refill() {
        let limiter = Limiter::new(rate(3, 10), 64 * 1024);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take(1, start), Ok(()));
        }
        assert_eq!(limiter.take(1, start), Err(10 * SECOND));
        assert_eq!(limiter.check(1, start + 4 * SECOND), Err(6 * SECOND));
        // Another key is not affected.
        assert_eq!(limiter.take(2, start), Ok(()));
        // One attempt back after one refill, not two.
        assert_eq!(limiter.take(1, start + 10 * SECOND), Ok(()));
        assert!(limiter.take(1, start + 10 * SECOND).is_err());
        // A long pause refills the whole burst, no more.
        let later = start + 1000 * SECOND;
        for _ in 0..3 {
            assert_eq!(limiter.take(1, later), Ok(()));
        }
        assert!(limiter.take(1, later).is_err());
    }

    #[test]
    fn charges_cap_the_debt_and_forget_restores_the_burst() {
        let limiter = Limiter::new(rate(2, 10), 64 * 1024);
        let now = Instant::now();
        for _ in 0..100 {
            limiter.charge(7, now);
        }
        // However many failures were charged, the wait is one refill at most.
        assert_eq!(limiter.check(7, now), Err(10 * SECOND));
        limiter.forget(7);
        assert_eq!(limiter.check(7, now), Ok(()));
    }

    #[test]
    fn the_table_never_grows_past_its_bytes() {
        let budget = 64 * 1024;
        let limiter = Limiter::new(rate(1, 3600), budget);
        let at_start = limiter.table_bytes();
        assert!(at_start <= budget, "{at_start} > {budget}");
        let now = Instant::now();
        for key in 0..200_000u64 {
            limiter.take(key, now).unwrap();
        }
        assert_eq!(limiter.table_bytes(), at_start, "the table grew");
        // Recent keys are remembered, the oldest were evicted whole.
        assert!(limiter.take(199_999, now).is_err());
        assert_eq!(limiter.take(0, now), Ok(()));
        // A key in use survives rotations: it moves to the current generation when written.
        let per_generation = limiter.table().per_generation as u64;
        limiter.take(u64::MAX, now).unwrap();
        for key in 0..per_generation * 3 {
            limiter.charge(1_000_000 + key, now);
            if key % (per_generation / 2) == 0 {
                limiter.charge(u64::MAX, now);
            }
        }
        assert!(limiter.check(u64::MAX, now).is_err(), "an active key was evicted");
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn the_client_address_is_the_rightmost_untrusted_hop() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let loopback = ip("127.0.0.1");
        let proxy = ip("10.0.0.5");
        let outsider = ip("203.0.113.9");
        // From the gateway on loopback: the entry it appended, not what the client claimed.
        let headers = forwarded(&["1.1.1.1, 198.51.100.7"]);
        assert_eq!(client_address(loopback, &headers, &[]), ip("198.51.100.7"));
        // From an untrusted peer the header is ignored.
        assert_eq!(client_address(outsider, &headers, &[]), outsider);
        // A listed proxy is trusted, and so are proxy hops inside the header.
        let headers = forwarded(&["6.6.6.6", "198.51.100.7, 10.0.0.5"]);
        assert_eq!(client_address(proxy, &headers, &[proxy]), ip("198.51.100.7"));
        assert_eq!(client_address(proxy, &headers, &[]), proxy);
        // No header, or garbage in it: the last good hop.
        assert_eq!(client_address(loopback, &HeaderMap::new(), &[]), loopback);
        let headers = forwarded(&["198.51.100.7, not-an-ip"]);
        assert_eq!(client_address(loopback, &headers, &[]), loopback);
        let headers = forwarded(&["[2001:db8::1]:443"]);
        assert_eq!(client_address(loopback, &headers, &[]), ip("2001:db8::1"));
    }

    #[test]
    fn addresses_count_by_ipv4_or_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            address_bucket(ip("2001:db8:1:2::1")),
            address_bucket(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            address_bucket(ip("2001:db8:1:2::1")),
            address_bucket(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            address_bucket(ip("192.0.2.1")),
            address_bucket(ip("::ffff:192.0.2.1"))
        );
        assert_ne!(address_bucket(ip("192.0.2.1")), address_bucket(ip("192.0.2.2")));
    }

    #[test]
    fn the_throttle_limits_addresses_and_failed_usernames() {
        let registry = Registry::new();
        let limits = LoginLimits {
            per_address: rate(3, 60),
            per_username: rate(2, 60),
            ..LoginLimits::default()
        };
        let throttle = LoginThrottle::new(&limits, &registry).unwrap();
        let a = "192.0.2.1".parse().unwrap();
        let b = "192.0.2.2".parse().unwrap();
        // Failures for one name (in any case), from two addresses: the name is throttled.
        for (client, name) in [(a, "ann"), (b, "ANN")] {
            throttle.admit(client, name).unwrap();
            throttle.failed(name);
        }
        let refused = throttle.admit(b, "Ann").unwrap_err();
        assert_eq!(refused.reason, REASON_USERNAME);
        assert!(refused.retry_after <= 60 * SECOND && refused.retry_after > 59 * SECOND);
        // Successes do not count against a name; the address runs out after its burst.
        throttle.admit(a, "bob").unwrap();
        throttle.succeeded("bob");
        throttle.admit(a, "bob").unwrap();
        let refused = throttle.admit(a, "bob").unwrap_err();
        assert_eq!(refused.reason, REASON_ADDRESS);
        // A process on this host is not limited per address.
        let local = "127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            throttle.admit(local, "bob").unwrap();
        }
        let text = registry.encode_text();
        assert!(
            text.contains("user_auth_throttled_total{reason=\"username\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("user_auth_throttled_total{reason=\"client_address\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn limits_from_the_environment() {
        let env = |name: &str| {
            Some(
                match name {
                    ADDRESS_BURST_ENV => "10",
                    ADDRESS_REFILL_ENV => "500ms",
                    USERNAME_BURST_ENV => "3",
                    USERNAME_REFILL_ENV => "1m",
                    TABLE_BYTES_ENV => "65536",
                    TRUSTED_PROXIES_ENV => "10.0.0.5, ::1",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let limits = LoginLimits::from_env(&env).unwrap();
        assert_eq!(
            limits,
            LoginLimits {
                per_address: Rate {
                    burst: 10,
                    refill: Duration::from_millis(500)
                },
                per_username: rate(3, 60),
                table_bytes: 65536,
                trusted_proxies: vec!["10.0.0.5".parse().unwrap(), "::1".parse().unwrap()],
            }
        );
        assert_eq!(
            LoginLimits::from_env(&|_: &str| None).unwrap(),
            LoginLimits::default()
        );
        for (name, value) in [
            (ADDRESS_BURST_ENV, "0"),
            (USERNAME_REFILL_ENV, "0s"),
            (TABLE_BYTES_ENV, "10"),
            (TRUSTED_PROXIES_ENV, "gateway.local"),
        ] {
            let env = move |n: &str| (n == name).then(|| value.to_string());
            assert!(LoginLimits::from_env(&env).is_err(), "{name}={value}");
        }
    }
}
