//! The production backend: Cassandra or ScyllaDB over CQL, through the `scylla` driver.
//!
//! Chosen by configuration ([`ScyllaConfig::from_values`], read by the service kit): `SCYLLA_NODES=host:9042,host2:9042`
//! names the contact points, `SCYLLA_KEYSPACE` the keyspace (`store`), and
//! `SCYLLA_REPLICATION_FACTOR` its replication factor (1, `SimpleStrategy`). The keyspace and
//! the tables are created when missing; every statement is prepared once, when the store
//! opens.
//!
//! # Schema
//!
//! CQL answers only lookups by partition key efficiently, so every lookup the [`super::Store`]
//! interface needs has a table partitioned by its key, and no statement uses
//! `ALLOW FILTERING`:
//!
//! | table | primary key | serves |
//! | --- | --- | --- |
//! | `products` | `(id)` | a product; its stock (changed only by LWT) |
//! | `products_by_name` | `((bucket), name, id)` | the catalogue sorted by name, then id |
//! | `products_by_category` | `((category), name, id)` | one category sorted by name, then id |
//! | `categories` | `((bucket), name)` | the sorted category names; whether one exists |
//! | `users` | `(id)` | a user |
//! | `users_by_username` | `(username)` | login by name; uniqueness (LWT `IF NOT EXISTS`) |
//! | `users_by_email` | `(email)` | uniqueness of e-mail addresses (LWT `IF NOT EXISTS`) |
//! | `cart_items` | `((user_id), product_id)` | a cart, sorted by product id |
//! | `cart_activity` | `(user_id)` | when a cart last changed; whether it was counted abandoned (LWT) |
//! | `idle_cart_buckets` | `((bucket), last_activity, user_id)` | cart activity by time bucket, oldest first (rows expire by TTL, never deleted) |
//! | `idle_cart_sweep` | `(name)` | how far the abandonment sweep has read `idle_cart_buckets` |
//! | `orders` | `(id)` | an order, its items and status history (status changed by LWT) |
//! | `orders_by_user` | `((user_id), created_at DESC, id)` | a user's orders, newest first |
//! | `orders_by_status` | `((status), created_at, id)` | orders in a status, oldest first |
//!
//! `bucket` is always 0: the whole catalogue (and the category list) is one partition, which
//! is what a sorted listing over all products needs and stays small for a shop's catalogue.
//! Usernames and e-mail addresses are keyed in ASCII lower case, so that, as in the SQLite
//! store, they are unique and found whatever their case.
//!
//! The `*_by_*` tables hold keys only; the rows themselves are read from `products` and
//! `orders` (in parallel), so that stock and status have one copy each. Those two tables (and
//! `cart_activity`) are written only through lightweight transactions (Paxos), which is what
//! makes compare-and-set on them safe: stock changes are `UPDATE products SET stock = ? WHERE id = ? IF stock = ?`,
//! retried on contention with the current value the failed attempt returns; a status change
//! is `... IF status = ?` and reports [`StoreError::Stale`] when another writer got there
//! first; an abandoned cart is claimed with `... IF last_activity = ? AND abandoned = false`,
//! so that it is counted once per idle period however many sweepers run. A multi-line stock
//! decrement takes line after line and gives back what it took when
//! a later line fails, so that it is all or nothing as seen from its caller.
//!
//! Product and cart index rows are written before the row they point to (a crash in between
//! leaves an index entry that readers skip) and moved in logged batches. Orders are the other
//! way round (the write order): the row first, then its index entries in one logged
//! batch, written again by a retried checkout create; a status entry left behind by a failed
//! move is cleaned by the next `orders_in_status` read; so no order entry is skipped forever.
//! The checkout journal (`checkouts`), the reservations (`stock_reservations`), the checkout
//! claims (`order_checkouts`) and the restocks (`order_restocks`) move by LWT only (`IF NOT
//! EXISTS`, `IF state = ?`); the lists the recovery sweeps read are hourly partitions whose
//! entries expire (TTL), never queues with deletes. What a cluster without cross-partition
//! transactions cannot give is said in `services/README.md` (storage section).
//!
//! # No queue tables
//!
//! Finding abandoned carts is the one place where the store scans by time. A single partition
//! of "carts not yet counted", with an entry deleted each time a cart is touched or counted,
//! would be a queue: every sweep would read past the tombstones of all earlier deletes, and a
//! busy shop piles up tombstones faster than compaction drops them. Instead each touch appends
//! an entry to `idle_cart_buckets`, partitioned by [`IDLE_BUCKET_SECONDS`]-wide buckets of its
//! time and written with a TTL of [`IDLE_TTL_SECONDS`] (time-window compaction drops whole
//! expired windows); nothing deletes from it. The sweep keeps a cursor in `idle_cart_sweep`:
//! every entry older than the cursor was examined, so each sweep reads only the buckets from
//! the cursor to its cutoff (entries are written at "now", always after the cutoff). An entry
//! is only a hint: the cart is counted by the LWT on `cart_activity`
//! (`IF last_activity = ? AND abandoned = false`), so an entry for a cart touched since, or
//! forgotten, or already counted, fails that test and is passed over. The cost of the design:
//! a cart left idle longer than the TTL before any sweep runs (the cart service down for
//! [`IDLE_TTL_SECONDS`]) is not counted, and `CART_ABANDON_AFTER_SECONDS` must stay below it.
//!
//! On ScyllaDB the keyspace is created with tablets disabled (lightweight transactions need
//! vnode keyspaces on several ScyllaDB releases); Cassandra, which knows no such option, gets
//! the plain statement.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::scylla::client::execution_profile::ExecutionProfile;
use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::deserialize::row::DeserializeRow;
use ::scylla::response::query_result::QueryResult;
use ::scylla::response::PagingState;
use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::batch::{Batch, BatchType};
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::value::{CqlValue, Row};

use super::{
    checkout_state, CartActivity, CartItem, Checkout, CheckoutOrder, NewProduct, Order, OrderItem,
    PendingRestock, Product, ProductUpdate, Reservation, StatusChange, StoreError, User,
};

/// Environment variable naming the contact points (`host:port,host:port`); unset or empty
/// selects the embedded SQLite store.
pub const NODES_ENV: &str = "SCYLLA_NODES";
/// Environment variable naming the keyspace (default [`DEFAULT_KEYSPACE`]).
pub const KEYSPACE_ENV: &str = "SCYLLA_KEYSPACE";
/// Environment variable giving the keyspace's replication factor (default 1).
pub const REPLICATION_FACTOR_ENV: &str = "SCYLLA_REPLICATION_FACTOR";
/// The keyspace when `SCYLLA_KEYSPACE` is not set.
pub const DEFAULT_KEYSPACE: &str = "store";
/// The CQL native protocol port, used when a node is given without one.
pub const DEFAULT_PORT: u16 = 9042;

/// How long connecting to one node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening the whole session (contact, topology and schema metadata) may take,
/// unless [`ScyllaConfig::open_timeout`] says otherwise.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request may take, retries included, before the driver gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries of `idle_cart_buckets` read per page when looking for abandoned carts.
const IDLE_PAGE: i32 = 100;
/// Most entries one claim examines (claimed or passed over); the next claim goes on from
/// there, so one call stays bounded however many carts went idle.
const IDLE_EXAMINED: usize = 10_000;
/// Width of the time buckets of `idle_cart_buckets` (the partition key): ten minutes.
pub const IDLE_BUCKET_SECONDS: f64 = 600.0;
/// How long an entry of `idle_cart_buckets` lives: eight days, which covers an abandonment
/// time of up to a week plus a day of the sweeper not running.
pub const IDLE_TTL_SECONDS: i32 = 8 * 24 * 3600;
/// Keys read per driver page when skipping to a page of a listing (products, a user's
/// orders): memory stays one driver page whatever page a client asks for.
const KEY_PAGE: i32 = 1000;
/// Compare-and-set attempts on one row before contention is reported as a failure. Every
/// round lets at least one contender through, so this is far above what the shop's own
/// concurrency needs.
const CAS_ATTEMPTS: u32 = 200;

/// Where and how to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` each.
    pub nodes: Vec<String>,
    /// The keyspace of the shop's tables (lower case, created if missing).
    pub keyspace: String,
    /// Replication factor of the keyspace when this store creates it.
    pub replication_factor: u32,
    /// How long connecting may take in all ([`OPEN_TIMEOUT`]); one node gets at most 5 s.
    pub open_timeout: Duration,
}

impl ScyllaConfig {
    /// The configuration from the values of `SCYLLA_NODES`, `SCYLLA_KEYSPACE` and
    /// `SCYLLA_REPLICATION_FACTOR` (blank ones count as unset): `None` when no nodes are named
    /// (the SQLite store is meant), an error when a value is malformed. The service kit reads
    /// them once, with the rest of the configuration (`shop_common::service::StoreChoice`).
    pub fn from_values(
        nodes: Option<&str>,
        keyspace: Option<&str>,
        replication_factor: Option<&str>,
    ) -> Result<Option<ScyllaConfig>, StoreError> {
        fn blank_is_none(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let Some(nodes) = blank_is_none(nodes) else {
            return Ok(None);
        };
        let nodes = parse_nodes(nodes)?;
        let keyspace = parse_keyspace(blank_is_none(keyspace).unwrap_or(DEFAULT_KEYSPACE))?;
        let replication_factor = match blank_is_none(replication_factor) {
            None => 1,
            Some(v) => v.parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                StoreError::Backend(format!(
                    "{REPLICATION_FACTOR_ENV}={v:?} is not a positive integer"
                ))
            })?,
        };
        Ok(Some(ScyllaConfig {
            nodes,
            keyspace,
            replication_factor,
            open_timeout: OPEN_TIMEOUT,
        }))
    }
}

/// Splits `host:port,host:port` into contact points; a node without a port gets 9042. IPv6
/// addresses are written in brackets (`[::1]:9042`).
pub fn parse_nodes(list: &str) -> Result<Vec<String>, StoreError> {
    let bad = |node: &str, why: &str| StoreError::Backend(format!("{NODES_ENV}: {node:?} {why}"));
    let mut nodes = Vec::new();
    for node in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let (host, port) = if let Some(rest) = node.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad(node, "has no closing bracket"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad(node, "has text after the bracket"))?,
                    ),
                ),
            }
        } else {
            match node.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (node, None),
            }
        };
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return Err(bad(node, "has no valid host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(node, "has no valid port"))?,
        };
        nodes.push(if node.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        });
    }
    if nodes.is_empty() {
        return Err(StoreError::Backend(format!("{NODES_ENV} names no node")));
    }
    Ok(nodes)
}

/// A keyspace name is spliced into `CREATE KEYSPACE`, so only CQL's unquoted identifiers are
/// accepted (a letter, then letters, digits and `_`, at most 48), folded to lower case as CQL
/// folds them.
pub fn parse_keyspace(name: &str) -> Result<String, StoreError> {
    let valid = name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(StoreError::Backend(format!(
            "{KEYSPACE_ENV}={name:?} is not a keyspace name (a letter, then letters, digits or _)"
        )));
    }
    Ok(name.to_ascii_lowercase())
}

/// `CREATE KEYSPACE` for `keyspace`; `scylla_vnodes` adds ScyllaDB's option that keeps the
/// keyspace off tablets (see the module documentation).
fn create_keyspace_cql(keyspace: &str, replication_factor: u32, scylla_vnodes: bool) -> String {
    let tablets = if scylla_vnodes {
        " AND tablets = {'enabled': false}"
    } else {
        ""
    };
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}{tablets}"
    )
}

/// The tables, created in the session's keyspace when missing.
const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS products (id text PRIMARY KEY, name text, description text, \
     price double, category text, stock bigint)",
    "CREATE TABLE IF NOT EXISTS products_by_name (bucket int, name text, id text, \
     PRIMARY KEY ((bucket), name, id))",
    "CREATE TABLE IF NOT EXISTS products_by_category (category text, name text, id text, \
     PRIMARY KEY ((category), name, id))",
    "CREATE TABLE IF NOT EXISTS categories (bucket int, name text, PRIMARY KEY ((bucket), name))",
    "CREATE TABLE IF NOT EXISTS users (id text PRIMARY KEY, username text, email text, \
     password_hash text, role text, created_at double)",
    "CREATE TABLE IF NOT EXISTS users_by_username (username text PRIMARY KEY, id text)",
    "CREATE TABLE IF NOT EXISTS users_by_email (email text PRIMARY KEY, id text)",
    "CREATE TABLE IF NOT EXISTS cart_items (user_id text, product_id text, name text, price double, \
     quantity bigint, PRIMARY KEY ((user_id), product_id))",
    "CREATE TABLE IF NOT EXISTS cart_activity (user_id text PRIMARY KEY, last_activity double, \
     checkout_attempted boolean, abandoned boolean)",
    "CREATE TABLE IF NOT EXISTS idle_cart_buckets (bucket bigint, last_activity double, user_id text, \
     checkout_attempted boolean, PRIMARY KEY ((bucket), last_activity, user_id)) \
     WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', \
     'compaction_window_size': 6}",
    "CREATE TABLE IF NOT EXISTS idle_cart_sweep (name text PRIMARY KEY, swept_until double)",
    "CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, user_id text, \
     items list<frozen<tuple<text, text, double, bigint>>>, total double, status text, \
     created_at double, history list<frozen<tuple<text, double>>>, checkout_id text)",
    "CREATE TABLE IF NOT EXISTS orders_by_user (user_id text, created_at double, id text, \
     PRIMARY KEY ((user_id), created_at, id)) WITH CLUSTERING ORDER BY (created_at DESC, id ASC)",
    "CREATE TABLE IF NOT EXISTS orders_by_status (status text, created_at double, id text, \
     PRIMARY KEY ((status), created_at, id))",
    "CREATE TABLE IF NOT EXISTS order_checkouts (checkout_id text PRIMARY KEY, order_id text, state text)",
    "CREATE TABLE IF NOT EXISTS order_restocks (order_id text PRIMARY KEY, checkout_id text, done boolean, \
     at double)",
    "CREATE TABLE IF NOT EXISTS order_restocks_by_time (bucket bigint, at double, order_id text, \
     PRIMARY KEY ((bucket), at, order_id))",
    "CREATE TABLE IF NOT EXISTS stock_reservations (id text PRIMARY KEY, items text, state text, at double)",
    "CREATE TABLE IF NOT EXISTS checkouts (id text PRIMARY KEY, user_id text, items text, state text, \
     order_json text, created_at double, updated_at double)",
    "CREATE TABLE IF NOT EXISTS checkouts_by_time (bucket bigint, created_at double, id text, \
     PRIMARY KEY ((bucket), created_at, id))",
    "CREATE TABLE IF NOT EXISTS checkouts_by_user (user_id text, id text, PRIMARY KEY ((user_id), id))",
];

/// Width of the time buckets of `checkouts_by_time` and `order_restocks_by_time`: one
/// partition an hour, so that no partition grows without bound and none is a queue with
/// deletes (entries are never deleted; they expire).
const BUCKET_SECONDS: f64 = 3600.0;
/// How far back the recovery sweeps look, in buckets: two days, which is also the lifetime of
/// the index entries (`USING TTL 172800`); a journal row unfinished for longer is beyond what
/// a sweep every second or so can miss.
const BUCKETS_SCANNED: i64 = 48;
/// How long a reservation may stay in `taking` or `releasing` (a backend that died mid-way)
/// before a release treats the step as dead.
const TAKING_GRACE_SECONDS: f64 = 60.0;

fn bucket_of(at: f64) -> i64 {
    (at / BUCKET_SECONDS).floor() as i64
}

/// Declares the prepared statements: one field of [`Statements`] each, and the list of their
/// texts for the tests.
macro_rules! statements {
    ($($field:ident = $cql:expr;)*) => {
        /// Every statement the store runs, prepared once when it opens.
        struct Statements {
            $($field: PreparedStatement,)*
        }

        /// `(name, CQL)` of every prepared statement.
        #[cfg_attr(not(test), allow(dead_code))]
        const STATEMENTS: &[(&str, &str)] = &[$((stringify!($field), $cql),)*];

        impl Statements {
            async fn prepare(session: &Session) -> Result<Statements, StoreError> {
                Ok(Statements {
                    $($field: prepare(session, stringify!($field), $cql).await?,)*
                })
            }
        }
    };
}

statements! {
    ping = "SELECT release_version FROM system.local WHERE key = 'local'";
    product = "SELECT id, name, description, price, category, stock FROM products WHERE id = ?";
    product_stock = "SELECT stock FROM products WHERE id = ?";
    insert_product = "INSERT INTO products (id, name, description, price, category, stock) \
                      VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    update_product = "UPDATE products SET name = ?, description = ?, price = ?, category = ? \
                      WHERE id = ? IF name = ? AND category = ?";
    update_product_and_stock = "UPDATE products SET name = ?, description = ?, price = ?, category = ?, \
                                stock = ? WHERE id = ? IF name = ? AND category = ?";
    delete_product = "DELETE FROM products WHERE id = ? IF name = ? AND category = ?";
    set_stock = "UPDATE products SET stock = ? WHERE id = ? IF stock = ?";
    any_product = "SELECT id FROM products_by_name WHERE bucket = 0 LIMIT 1";
    list_products = "SELECT id FROM products_by_name WHERE bucket = 0";
    list_category = "SELECT id FROM products_by_category WHERE category = ?";
    index_product_name = "INSERT INTO products_by_name (bucket, name, id) VALUES (0, ?, ?)";
    unindex_product_name = "DELETE FROM products_by_name WHERE bucket = 0 AND name = ? AND id = ?";
    index_product_category = "INSERT INTO products_by_category (category, name, id) VALUES (?, ?, ?)";
    unindex_product_category = "DELETE FROM products_by_category WHERE category = ? AND name = ? AND id = ?";
    insert_category = "INSERT INTO categories (bucket, name) VALUES (0, ?)";
    categories = "SELECT name FROM categories WHERE bucket = 0";
    category = "SELECT name FROM categories WHERE bucket = 0 AND name = ?";
    insert_user = "INSERT INTO users (id, username, email, password_hash, role, created_at) \
                   VALUES (?, ?, ?, ?, ?, ?)";
    delete_user = "DELETE FROM users WHERE id = ?";
    user = "SELECT id, username, email, password_hash, role FROM users WHERE id = ?";
    claim_username = "INSERT INTO users_by_username (username, id) VALUES (?, ?) IF NOT EXISTS";
    release_username = "DELETE FROM users_by_username WHERE username = ? IF id = ?";
    user_id_by_username = "SELECT id FROM users_by_username WHERE username = ?";
    claim_email = "INSERT INTO users_by_email (email, id) VALUES (?, ?) IF NOT EXISTS";
    cart = "SELECT product_id, name, price, quantity FROM cart_items WHERE user_id = ?";
    upsert_cart_item = "INSERT INTO cart_items (user_id, product_id, name, price, quantity) \
                        VALUES (?, ?, ?, ?, ?)";
    delete_cart_item = "DELETE FROM cart_items WHERE user_id = ? AND product_id = ?";
    clear_cart = "DELETE FROM cart_items WHERE user_id = ?";
    any_cart_item = "SELECT product_id FROM cart_items WHERE user_id = ? LIMIT 1";
    cart_activity = "SELECT user_id, last_activity, checkout_attempted, abandoned FROM cart_activity \
                     WHERE user_id = ?";
    insert_cart_activity = "INSERT INTO cart_activity (user_id, last_activity, checkout_attempted, abandoned) \
                            VALUES (?, ?, ?, false) IF NOT EXISTS";
    touch_cart_activity = "UPDATE cart_activity SET last_activity = ?, checkout_attempted = ?, abandoned = false \
                           WHERE user_id = ? IF last_activity = ? AND abandoned = ?";
    delete_cart_activity = "DELETE FROM cart_activity WHERE user_id = ? IF last_activity = ? AND abandoned = ?";
    claim_cart_activity = "UPDATE cart_activity SET abandoned = true WHERE user_id = ? \
                           IF last_activity = ? AND abandoned = false";
    index_idle_cart = "INSERT INTO idle_cart_buckets (bucket, last_activity, user_id, checkout_attempted) \
                       VALUES (?, ?, ?, ?) USING TTL ?";
    idle_carts = "SELECT last_activity, user_id, checkout_attempted FROM idle_cart_buckets \
                  WHERE bucket = ? AND last_activity >= ? AND last_activity < ?";
    idle_sweep = "SELECT swept_until FROM idle_cart_sweep WHERE name = 'abandoned'";
    set_idle_sweep = "INSERT INTO idle_cart_sweep (name, swept_until) VALUES ('abandoned', ?)";
    insert_order = "INSERT INTO orders (id, user_id, items, total, status, created_at, history, checkout_id) \
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    delete_order = "DELETE FROM orders WHERE id = ? IF EXISTS";
    order = "SELECT id, user_id, items, total, status, created_at, history, checkout_id FROM orders WHERE id = ?";
    set_order_status = "UPDATE orders SET status = ?, history = history + ? WHERE id = ? IF status = ?";
    index_order_user = "INSERT INTO orders_by_user (user_id, created_at, id) VALUES (?, ?, ?)";
    user_order_ids = "SELECT id FROM orders_by_user WHERE user_id = ?";
    orders_by_ids = "SELECT id, user_id, items, total, status, created_at, history, checkout_id FROM orders \
                     WHERE id IN ?";
    index_order_status = "INSERT INTO orders_by_status (status, created_at, id) VALUES (?, ?, ?)";
    unindex_order_status = "DELETE FROM orders_by_status WHERE status = ? AND created_at = ? AND id = ?";
    order_ids_in_status = "SELECT id FROM orders_by_status WHERE status = ? LIMIT ?";
    claim_order_checkout = "INSERT INTO order_checkouts (checkout_id, order_id, state) VALUES (?, ?, ?) IF NOT EXISTS";
    order_checkout = "SELECT state, order_id FROM order_checkouts WHERE checkout_id = ?";
    insert_restock = "INSERT INTO order_restocks (order_id, checkout_id, done, at) VALUES (?, ?, false, ?) IF NOT EXISTS";
    index_restock = "INSERT INTO order_restocks_by_time (bucket, at, order_id) VALUES (?, ?, ?) USING TTL 172800";
    restocks_in_bucket = "SELECT order_id FROM order_restocks_by_time WHERE bucket = ?";
    restock = "SELECT order_id, checkout_id, done FROM order_restocks WHERE order_id = ?";
    finish_restock = "UPDATE order_restocks SET done = true WHERE order_id = ? IF done = false";
    insert_reservation = "INSERT INTO stock_reservations (id, items, state, at) VALUES (?, ?, ?, ?) IF NOT EXISTS";
    reservation = "SELECT state, items, at FROM stock_reservations WHERE id = ?";
    move_reservation = "UPDATE stock_reservations SET state = ?, at = ? WHERE id = ? IF state = ?";
    drop_reservation = "DELETE FROM stock_reservations WHERE id = ? IF state = ?";
    insert_checkout = "INSERT INTO checkouts (id, user_id, items, state, order_json, created_at, updated_at) \
                       VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    checkout = "SELECT id, user_id, items, state, order_json, created_at, updated_at FROM checkouts WHERE id = ?";
    move_checkout = "UPDATE checkouts SET state = ?, order_json = ?, updated_at = ? WHERE id = ? IF state = ?";
    index_checkout_time = "INSERT INTO checkouts_by_time (bucket, created_at, id) VALUES (?, ?, ?) USING TTL 172800";
    index_checkout_user = "INSERT INTO checkouts_by_user (user_id, id) VALUES (?, ?) USING TTL 172800";
    checkouts_in_bucket = "SELECT id FROM checkouts_by_time WHERE bucket = ? AND created_at < ?";
    user_checkouts = "SELECT id FROM checkouts_by_user WHERE user_id = ?";
}

fn backend(e: impl Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

async fn prepare(session: &Session, name: &str, cql: &str) -> Result<PreparedStatement, StoreError> {
    let mut prepared = session
        .prepare(cql)
        .await
        .map_err(|e| StoreError::Backend(format!("preparing {name}: {e}")))?;
    // Reads and plain writes may be retried by the driver after a timeout; a lightweight
    // transaction or a list append may not (it could apply twice).
    prepared.set_is_idempotent(is_idempotent(cql));
    Ok(prepared)
}

fn is_idempotent(cql: &str) -> bool {
    !cql.contains(" IF ") && !cql.contains("+ ?")
}

/// The outcome of a lightweight transaction: whether it applied, and the row's current values
/// when it did not (Cassandra sends only the condition's columns, ScyllaDB all it names; a
/// missing row has none of them, or nulls).
struct Lwt {
    applied: bool,
    names: Vec<String>,
    row: Row,
}

impl Lwt {
    fn from(result: QueryResult) -> Result<Lwt, StoreError> {
        let rows = result.into_rows_result().map_err(backend)?;
        let names = rows
            .column_specs()
            .iter()
            .map(|spec| spec.name().to_string())
            .collect();
        let row: Row = rows
            .maybe_first_row()
            .map_err(backend)?
            .ok_or_else(|| StoreError::Backend("a lightweight transaction returned no row".into()))?;
        let applied = match row.columns.first() {
            Some(Some(CqlValue::Boolean(applied))) => *applied,
            other => {
                return Err(StoreError::Backend(format!(
                    "a lightweight transaction returned {other:?} for [applied]"
                )))
            }
        };
        Ok(Lwt { applied, names, row })
    }

    /// The current value of `column`, when the row exists.
    fn current(&self, column: &str) -> Option<&CqlValue> {
        let i = self.names.iter().position(|n| n == column)?;
        self.row.columns.get(i)?.as_ref()
    }
}

type ProductRow = (String, String, String, f64, String, i64);
type OrderRow = (
    String,
    String,
    Option<Vec<(String, String, f64, i64)>>,
    f64,
    String,
    f64,
    Option<Vec<(String, f64)>>,
    Option<String>,
);

type CheckoutRow = (String, String, String, String, Option<String>, f64, f64);

fn json_error(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("journal encoding: {e}"))
}

fn checkout_from(row: CheckoutRow) -> Result<Checkout, StoreError> {
    let (id, user_id, items, state, order, created_at, updated_at) = row;
    Ok(Checkout {
        items: serde_json::from_str(&items).map_err(json_error)?,
        id,
        user_id,
        state,
        order,
        created_at,
        updated_at,
    })
}

/// The text value of `column` in a lightweight transaction's answer.
fn current_text(outcome: &Lwt, column: &str) -> Option<String> {
    match outcome.current(column) {
        Some(CqlValue::Text(t)) => Some(t.clone()),
        _ => None,
    }
}

fn product_from(row: ProductRow) -> Product {
    let (id, name, description, price, category, stock) = row;
    Product {
        id,
        name,
        description,
        price,
        category,
        stock,
    }
}

fn order_from(row: OrderRow) -> Order {
    let (id, user_id, items, total, status, created_at, history, checkout_id) = row;
    Order {
        checkout_id,
        id,
        user_id,
        // CQL stores an empty list as null.
        items: items
            .unwrap_or_default()
            .into_iter()
            .map(|(product_id, name, price, quantity)| OrderItem {
                product_id,
                name,
                price,
                quantity,
            })
            .collect(),
        total,
        status,
        created_at,
        history: history
            .unwrap_or_default()
            .into_iter()
            .map(|(status, at)| StatusChange { status, at })
            .collect(),
    }
}

/// The `idle_cart_buckets` partition of an activity at `at` (seconds since the Unix epoch).
fn idle_bucket(at: f64) -> i64 {
    (at / IDLE_BUCKET_SECONDS).floor() as i64
}

fn text(s: &str) -> CqlValue {
    CqlValue::Text(s.to_string())
}

/// CQL's `LIMIT` is a positive `int`.
fn cql_limit(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A random pause of up to `max_ms` milliseconds, so that writers that collided on a
/// compare-and-set do not collide again in lockstep.
async fn backoff(attempt: u32) {
    let max_ms = 1u64 << attempt.min(5);
    let mut b = [0u8; 2];
    let jitter = match getrandom::fill(&mut b) {
        Ok(()) => u64::from(u16::from_le_bytes(b)) % (max_ms + 1),
        Err(_) => max_ms / 2,
    };
    tokio::time::sleep(Duration::from_millis(jitter)).await;
}

/// The Cassandra/ScyllaDB store of the shop. Cheap to clone (one shared session).
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    keyspace: String,
    st: Statements,
}

impl ScyllaStore {
    /// Connects to the cluster, creates the keyspace and tables when missing and prepares every
    /// statement. Fails with [`StoreError::Backend`] when no node answers within the timeouts.
    pub async fn open(config: &ScyllaConfig) -> Result<ScyllaStore, StoreError> {
        let profile = ExecutionProfile::builder()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .build();
        let builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(CONNECT_TIMEOUT.min(config.open_timeout))
            .hostname_resolution_timeout(Some(CONNECT_TIMEOUT))
            .default_execution_profile_handle(profile.into_handle());
        let nodes = config.nodes.join(",");
        let session = match tokio::time::timeout(config.open_timeout, builder.build()).await {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => {
                return Err(StoreError::Backend(format!(
                    "connecting to CQL nodes {nodes}: {e}"
                )))
            }
            Err(_) => {
                return Err(StoreError::Backend(format!(
                    "connecting to CQL nodes {nodes}: no answer within {:?}",
                    config.open_timeout
                )))
            }
        };
        let keyspace = config.keyspace.clone();
        let scylla_form = create_keyspace_cql(&keyspace, config.replication_factor, true);
        if session.query_unpaged(scylla_form, ()).await.is_err() {
            // Not ScyllaDB (Cassandra rejects the tablets option), or a ScyllaDB without
            // tablets: the plain statement is the portable one, and its error is the one worth
            // reporting.
            let plain = create_keyspace_cql(&keyspace, config.replication_factor, false);
            session
                .query_unpaged(plain, ())
                .await
                .map_err(|e| StoreError::Backend(format!("creating keyspace {keyspace}: {e}")))?;
        }
        session
            .use_keyspace(keyspace.as_str(), false)
            .await
            .map_err(|e| StoreError::Backend(format!("using keyspace {keyspace}: {e}")))?;
        for table in TABLES {
            session
                .query_unpaged(*table, ())
                .await
                .map_err(|e| StoreError::Backend(format!("creating the schema ({table}): {e}")))?;
        }
        let mut st = Statements::prepare(&session).await?;
        st.idle_carts.set_page_size(IDLE_PAGE);
        for listing in [
            &mut st.user_order_ids,
            &mut st.list_products,
            &mut st.list_category,
        ] {
            listing.set_page_size(KEY_PAGE);
        }
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                keyspace,
                st,
            }),
        })
    }

    /// The keyspace of the tables (`db.namespace`).
    pub fn keyspace(&self) -> &str {
        &self.inner.keyspace
    }

    fn st(&self) -> &Statements {
        &self.inner.st
    }

    async fn execute(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.inner
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(backend)
    }

    /// Runs a statement that returns nothing worth reading.
    async fn write(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<(), StoreError> {
        self.execute(statement, values).await.map(|_| ())
    }

    /// Runs a lightweight transaction.
    async fn lwt(&self, statement: &PreparedStatement, values: impl SerializeRow) -> Result<Lwt, StoreError> {
        Lwt::from(self.execute(statement, values).await?)
    }

    /// Runs a query and deserializes every row as `R`.
    async fn rows<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let rows = self
            .execute(statement, values)
            .await?
            .into_rows_result()
            .map_err(backend)?;
        let rows = rows.rows::<R>().map_err(backend)?;
        rows.collect::<Result<Vec<R>, _>>().map_err(backend)
    }

    /// Runs a query for at most one row.
    async fn row<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        Ok(self.rows(statement, values).await?.into_iter().next())
    }

    /// Runs the statements of a logged batch (all applied eventually, or none), each with its
    /// values (as CQL values, so that statements of different shapes share one list).
    async fn batch(&self, statements: Vec<(&PreparedStatement, Vec<CqlValue>)>) -> Result<(), StoreError> {
        if statements.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new(BatchType::Logged);
        let mut values = Vec::with_capacity(statements.len());
        for (statement, v) in statements {
            batch.append_statement(statement.clone());
            values.push(v);
        }
        self.inner
            .session
            .batch(&batch, values)
            .await
            .map(|_| ())
            .map_err(backend)
    }

    /// Reads the rows `fetch` finds for `ids` concurrently, in the order of `ids`, skipping
    /// those that are gone (an index entry whose row was deleted meanwhile).
    async fn fetch_each<T, F, Fut>(&self, ids: Vec<String>, fetch: F) -> Result<Vec<T>, StoreError>
    where
        T: Send + 'static,
        F: Fn(ScyllaStore, String) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, id) in ids.into_iter().enumerate() {
            let read = fetch(self.clone(), id);
            tasks.spawn(async move { (i, read.await) });
        }
        let mut found = Vec::with_capacity(tasks.len());
        // Dropping the set on an early return aborts the reads still running.
        while let Some(joined) = tasks.join_next().await {
            match joined.map_err(|e| StoreError::Backend(format!("read task failed: {e}")))? {
                (_, Err(StoreError::NotFound)) => {}
                (_, Err(e)) => return Err(e),
                (i, Ok(row)) => found.push((i, row)),
            }
        }
        found.sort_by_key(|(i, _)| *i);
        Ok(found.into_iter().map(|(_, row)| row).collect())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.rows::<(Option<String>,)>(&self.st().ping, ())
            .await
            .map(|_| ())
    }

    // ---- catalogue -------------------------------------------------------------------------

    pub(super) async fn seed_catalogue(&self, products: Vec<NewProduct>) -> Result<bool, StoreError> {
        // Only the product service seeds, once at start: a check then inserts is enough here,
        // CQL having no multi-partition transaction to make it one step.
        if self.row::<(String,)>(&self.st().any_product, ()).await?.is_some() {
            return Ok(false);
        }
        for product in &products {
            self.create_product(super::new_id(), product).await?;
        }
        Ok(true)
    }

    pub(super) async fn categories(&self) -> Result<Vec<String>, StoreError> {
        // The clustering order of the partition sorts them.
        let rows = self.rows::<(String,)>(&self.st().categories, ()).await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    pub(super) async fn category_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .row::<(String,)>(&self.st().category, (name,))
            .await?
            .is_some())
    }

    pub(super) async fn list_products(
        &self,
        category: Option<&str>,
        page: u32,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        // The partition's clustering order is name, id.
        let ids = match category {
            Some(category) => {
                self.page_of_keys(&self.st().list_category, (category,), page, limit)
                    .await?
            }
            None => {
                self.page_of_keys(&self.st().list_products, (), page, limit)
                    .await?
            }
        };
        self.fetch_each(ids, |store, id| async move { store.product(&id).await })
            .await
    }

    pub(super) async fn product(&self, id: &str) -> Result<Product, StoreError> {
        self.row::<ProductRow>(&self.st().product, (id,))
            .await?
            .map(product_from)
            .ok_or(StoreError::NotFound)
    }

    pub(super) async fn create_product(&self, id: String, p: &NewProduct) -> Result<Product, StoreError> {
        let st = self.st();
        self.batch(vec![
            (&st.insert_category, vec![text(&p.category)]),
            (&st.index_product_name, vec![text(&p.name), text(&id)]),
            (
                &st.index_product_category,
                vec![text(&p.category), text(&p.name), text(&id)],
            ),
        ])
        .await?;
        let inserted = self
            .lwt(
                &st.insert_product,
                (&id, &p.name, &p.description, p.price, &p.category, p.stock),
            )
            .await?;
        if !inserted.applied {
            return Err(StoreError::Conflict("id already taken".into()));
        }
        Ok(Product {
            id,
            name: p.name.clone(),
            description: p.description.clone(),
            price: p.price,
            category: p.category.clone(),
            stock: p.stock,
        })
    }

    /// Moves a product's index entries from its old name and category to its new ones.
    async fn reindex_product(
        &self,
        id: &str,
        old: (&str, &str),
        new: (&str, &str),
    ) -> Result<(), StoreError> {
        if old == new {
            return Ok(());
        }
        let st = self.st();
        let ((old_name, old_category), (new_name, new_category)) = (old, new);
        // A batch gives all its statements one timestamp, at which a deletion beats an
        // insertion of the same key: the by-name entry is moved only when its key changes.
        let mut statements = Vec::new();
        if old_name != new_name {
            statements.push((&st.unindex_product_name, vec![text(old_name), text(id)]));
            statements.push((&st.index_product_name, vec![text(new_name), text(id)]));
        }
        statements.push((
            &st.unindex_product_category,
            vec![text(old_category), text(old_name), text(id)],
        ));
        statements.push((
            &st.index_product_category,
            vec![text(new_category), text(new_name), text(id)],
        ));
        self.batch(statements).await
    }

    pub(super) async fn update_product(&self, id: &str, u: &ProductUpdate) -> Result<Product, StoreError> {
        let st = self.st();
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.product(id).await?;
            let name = u.name.as_ref().unwrap_or(&current.name);
            let description = u.description.as_ref().unwrap_or(&current.description);
            let price = u.price.unwrap_or(current.price);
            let category = u.category.as_ref().unwrap_or(&current.category);
            if category != &current.category {
                self.write(&st.insert_category, (category,)).await?;
            }
            // Conditioned on the name and category read, so that the index entries moved
            // below are the ones the row had; the stock is left to the stock CAS unless set.
            let outcome = match u.stock {
                Some(stock) => {
                    self.lwt(
                        &st.update_product_and_stock,
                        (
                            name,
                            description,
                            price,
                            category,
                            stock,
                            id,
                            &current.name,
                            &current.category,
                        ),
                    )
                    .await?
                }
                None => {
                    self.lwt(
                        &st.update_product,
                        (
                            name,
                            description,
                            price,
                            category,
                            id,
                            &current.name,
                            &current.category,
                        ),
                    )
                    .await?
                }
            };
            if outcome.applied {
                self.reindex_product(id, (&current.name, &current.category), (name, category))
                    .await?;
                return self.product(id).await;
            }
            if outcome.current("name").is_none() {
                return Err(StoreError::NotFound);
            }
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "product {id}: too much contention to update"
        )))
    }

    pub(super) async fn delete_product(&self, id: &str) -> Result<(), StoreError> {
        let st = self.st();
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.product(id).await?;
            let outcome = self
                .lwt(&st.delete_product, (id, &current.name, &current.category))
                .await?;
            if outcome.applied {
                return self
                    .batch(vec![
                        (&st.unindex_product_name, vec![text(&current.name), text(id)]),
                        (
                            &st.unindex_product_category,
                            vec![text(&current.category), text(&current.name), text(id)],
                        ),
                    ])
                    .await;
            }
            if outcome.current("name").is_none() {
                return Err(StoreError::NotFound);
            }
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "product {id}: too much contention to delete"
        )))
    }

    /// Changes a product's stock by compare-and-set: `next` maps the current level to the new
    /// one (or refuses); retried with the level a lost race reports. The new level.
    async fn cas_stock(
        &self,
        id: &str,
        next: impl Fn(i64) -> Result<i64, StoreError>,
    ) -> Result<i64, StoreError> {
        let st = self.st();
        let (mut current,) = self
            .row::<(Option<i64>,)>(&st.product_stock, (id,))
            .await?
            .ok_or(StoreError::NotFound)?;
        for attempt in 0..CAS_ATTEMPTS {
            let Some(stock) = current else {
                return Err(StoreError::NotFound);
            };
            let wanted = next(stock)?;
            let outcome = self.lwt(&st.set_stock, (wanted, id, stock)).await?;
            if outcome.applied {
                return Ok(wanted);
            }
            current = match outcome.current("stock") {
                Some(CqlValue::BigInt(s)) => Some(*s),
                Some(other) => return Err(StoreError::Backend(format!("stock of {id} is {other:?}"))),
                None => None,
            };
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "product {id}: too much contention on its stock"
        )))
    }

    pub(super) async fn restock(&self, id: &str, quantity: i64) -> Result<Product, StoreError> {
        self.cas_stock(id, |stock| Ok(stock.saturating_add(quantity)))
            .await?;
        self.product(id).await
    }

    pub(super) async fn decrement_stock(&self, items: &[(String, i64)]) -> Result<(), StoreError> {
        let mut taken: Vec<(&str, i64)> = Vec::with_capacity(items.len());
        for (id, quantity) in items {
            let quantity = *quantity;
            let took = self
                .cas_stock(id, |stock| {
                    if stock < quantity {
                        Err(StoreError::InsufficientStock {
                            product_id: id.clone(),
                            available: stock,
                        })
                    } else {
                        Ok(stock - quantity)
                    }
                })
                .await;
            if let Err(e) = took {
                // All or nothing: give back what the earlier lines took.
                for (id, quantity) in taken {
                    if let Err(undo) = self
                        .cas_stock(id, |stock| Ok(stock.saturating_add(quantity)))
                        .await
                    {
                        return Err(StoreError::Backend(format!(
                            "{e}; giving back {quantity} of {id} failed too: {undo}"
                        )));
                    }
                }
                return Err(e);
            }
            taken.push((id, quantity));
        }
        Ok(())
    }

    // ---- users -----------------------------------------------------------------------------

    pub(super) async fn create_user(&self, user: User) -> Result<User, StoreError> {
        let st = self.st();
        let username = user.username.to_ascii_lowercase();
        let email = user.email.to_ascii_lowercase();
        // The row first, then the claims on its unique values: a crash in between leaves an
        // unreachable row, never a name claimed by nobody.
        self.write(
            &st.insert_user,
            (
                &user.id,
                &user.username,
                &user.email,
                &user.password_hash,
                &user.role,
                super::now_seconds(),
            ),
        )
        .await?;
        if !self.lwt(&st.claim_username, (&username, &user.id)).await?.applied {
            self.write(&st.delete_user, (&user.id,)).await?;
            return Err(StoreError::Conflict("username already taken".into()));
        }
        if !self.lwt(&st.claim_email, (&email, &user.id)).await?.applied {
            self.lwt(&st.release_username, (&username, &user.id)).await?;
            self.write(&st.delete_user, (&user.id,)).await?;
            return Err(StoreError::Conflict("email already taken".into()));
        }
        Ok(user)
    }

    pub(super) async fn user(&self, id: &str) -> Result<User, StoreError> {
        let (id, username, email, password_hash, role) = self
            .row::<(String, String, String, String, String)>(&self.st().user, (id,))
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(User {
            id,
            username,
            email,
            password_hash,
            role,
        })
    }

    pub(super) async fn user_by_username(&self, username: &str) -> Result<User, StoreError> {
        let (id,) = self
            .row::<(String,)>(&self.st().user_id_by_username, (username.to_ascii_lowercase(),))
            .await?
            .ok_or(StoreError::NotFound)?;
        self.user(&id).await
    }

    // ---- carts -----------------------------------------------------------------------------

    pub(super) async fn cart(&self, user_id: &str) -> Result<Vec<CartItem>, StoreError> {
        let rows = self
            .rows::<(String, String, f64, i64)>(&self.st().cart, (user_id,))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(product_id, name, price, quantity)| CartItem {
                product_id,
                name,
                price,
                quantity,
            })
            .collect())
    }

    pub(super) async fn set_cart_item(&self, user_id: &str, item: &CartItem) -> Result<(), StoreError> {
        let st = self.st();
        if item.quantity == 0 {
            self.write(&st.delete_cart_item, (user_id, &item.product_id))
                .await
        } else {
            self.write(
                &st.upsert_cart_item,
                (user_id, &item.product_id, &item.name, item.price, item.quantity),
            )
            .await
        }
    }

    pub(super) async fn clear_cart(&self, user_id: &str) -> Result<(), StoreError> {
        self.write(&self.st().clear_cart, (user_id,)).await
    }

    // ---- cart activity ---------------------------------------------------------------------

    pub(super) async fn cart_activity(&self, user_id: &str) -> Result<Option<CartActivity>, StoreError> {
        let row = self
            .row::<(String, f64, bool, bool)>(&self.st().cart_activity, (user_id,))
            .await?;
        Ok(row.map(
            |(user_id, last_activity, checkout_attempted, abandoned)| CartActivity {
                user_id,
                last_activity,
                checkout_attempted,
                abandoned,
            },
        ))
    }

    pub(super) async fn touch_cart(
        &self,
        user_id: &str,
        at: f64,
        checkout_attempted: bool,
    ) -> Result<(), StoreError> {
        let st = self.st();
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.cart_activity(user_id).await?;
            let outcome = match &current {
                None => {
                    self.lwt(&st.insert_cart_activity, (user_id, at, checkout_attempted))
                        .await?
                }
                Some(old) => {
                    self.lwt(
                        &st.touch_cart_activity,
                        (at, checkout_attempted, user_id, old.last_activity, old.abandoned),
                    )
                    .await?
                }
            };
            if outcome.applied {
                // The new idle period is listed in its time bucket; the old one's entry stays
                // until its TTL (the claim's LWT passes over it), so nothing is deleted.
                return self
                    .write(
                        &st.index_idle_cart,
                        (idle_bucket(at), at, user_id, checkout_attempted, IDLE_TTL_SECONDS),
                    )
                    .await;
            }
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "cart of {user_id}: too much contention on its activity"
        )))
    }

    pub(super) async fn forget_cart_activity(&self, user_id: &str) -> Result<(), StoreError> {
        let st = self.st();
        for attempt in 0..CAS_ATTEMPTS {
            let Some(old) = self.cart_activity(user_id).await? else {
                return Ok(());
            };
            let outcome = self
                .lwt(
                    &st.delete_cart_activity,
                    (user_id, old.last_activity, old.abandoned),
                )
                .await?;
            if outcome.applied {
                // Its entry in `idle_cart_buckets` expires by itself; a claim passes over it.
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(StoreError::Backend(format!(
            "cart of {user_id}: too much contention on its activity"
        )))
    }

    pub(super) async fn claim_abandoned_carts(
        &self,
        cutoff: f64,
        limit: u32,
    ) -> Result<Vec<CartActivity>, StoreError> {
        let st = self.st();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut claimed = Vec::new();
        if limit == 0 {
            return Ok(claimed);
        }
        // Before the first sweep, everything still alive may be idle.
        let start = match self.row::<(Option<f64>,)>(&st.idle_sweep, ()).await? {
            Some((Some(until),)) => until,
            _ => cutoff - f64::from(IDLE_TTL_SECONDS),
        };
        if start >= cutoff {
            return Ok(claimed);
        }
        let mut examined = 0usize;
        for bucket in idle_bucket(start)..=idle_bucket(cutoff) {
            let mut paging = PagingState::start();
            loop {
                let (result, next) = self
                    .inner
                    .session
                    .execute_single_page(&st.idle_carts, (bucket, start, cutoff), paging)
                    .await
                    .map_err(backend)?;
                let rows = result.into_rows_result().map_err(backend)?;
                let entries = rows
                    .rows::<(f64, String, bool)>()
                    .map_err(backend)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?;
                for (last_activity, user_id, checkout_attempted) in entries {
                    // Stop at a bound and resume here next time: entries at this very time are
                    // read again, and those already claimed fail their LWT.
                    if claimed.len() >= limit || examined >= IDLE_EXAMINED {
                        self.write(&st.set_idle_sweep, (last_activity,)).await?;
                        return Ok(claimed);
                    }
                    examined += 1;
                    // As in the SQLite store, an empty cart is not abandoned; lines added later
                    // touch it, which lists it anew.
                    if self
                        .row::<(String,)>(&st.any_cart_item, (&user_id,))
                        .await?
                        .is_none()
                    {
                        continue;
                    }
                    let outcome = self
                        .lwt(&st.claim_cart_activity, (&user_id, last_activity))
                        .await?;
                    // Not applied: claimed by another sweeper, touched since (listed anew) or
                    // forgotten; the entry is passed over and expires.
                    if outcome.applied {
                        claimed.push(CartActivity {
                            user_id,
                            last_activity,
                            checkout_attempted,
                            abandoned: false,
                        });
                    }
                }
                match next.into_paging_control_flow() {
                    std::ops::ControlFlow::Continue(state) => paging = state,
                    std::ops::ControlFlow::Break(()) => break,
                }
            }
        }
        self.write(&st.set_idle_sweep, (cutoff,)).await?;
        Ok(claimed)
    }

    // ---- orders ----------------------------------------------------------------------------

    pub(super) async fn create_order(&self, order: Order) -> Result<Order, StoreError> {
        // The row first, then its index entries: a failure in between leaves an order that is
        // not listed yet (a retried checkout create writes its entries again), never an entry
        // that every reader must skip.
        if !self.insert_order_row(&order).await? {
            return Err(StoreError::Conflict("id already taken".into()));
        }
        self.index_order(&order).await?;
        Ok(order)
    }

    async fn insert_order_row(&self, order: &Order) -> Result<bool, StoreError> {
        let items: Vec<(&str, &str, f64, i64)> = order
            .items
            .iter()
            .map(|i| (i.product_id.as_str(), i.name.as_str(), i.price, i.quantity))
            .collect();
        let history: Vec<(&str, f64)> = order.history.iter().map(|h| (h.status.as_str(), h.at)).collect();
        let inserted = self
            .lwt(
                &self.st().insert_order,
                (
                    &order.id,
                    &order.user_id,
                    items,
                    order.total,
                    &order.status,
                    order.created_at,
                    history,
                    &order.checkout_id,
                ),
            )
            .await?;
        Ok(inserted.applied)
    }

    /// Writes an order's index entries (idempotent: plain inserts of keys).
    async fn index_order(&self, order: &Order) -> Result<(), StoreError> {
        let st = self.st();
        let at = CqlValue::Double(order.created_at);
        self.batch(vec![
            (
                &st.index_order_user,
                vec![text(&order.user_id), at.clone(), text(&order.id)],
            ),
            (
                &st.index_order_status,
                vec![text(&order.status), at, text(&order.id)],
            ),
        ])
        .await
    }

    /// The checkout's claim at the order service: `(state, order_id)`.
    async fn order_checkout(
        &self,
        checkout_id: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        self.row::<(String, Option<String>)>(&self.st().order_checkout, (checkout_id,))
            .await
    }

    pub(super) async fn create_checkout_order(&self, order: Order) -> Result<CheckoutOrder, StoreError> {
        let checkout_id = order
            .checkout_id
            .clone()
            .ok_or_else(|| StoreError::Backend("a checkout order without its checkout id".into()))?;
        if let Some(known) = self.known_checkout_order(&checkout_id).await? {
            return Ok(known);
        }
        // The row (not indexed, so no reader finds it), then the claim, which is the commit
        // point: an order is the checkout's only once its claim names it.
        self.insert_order_row(&order).await?;
        let claim = self
            .lwt(
                &self.st().claim_order_checkout,
                (&checkout_id, &order.id, "ordered"),
            )
            .await?;
        if !claim.applied {
            // Another create or an abort got there first: this row is nobody's.
            self.lwt(&self.st().delete_order, (&order.id,)).await?;
            return self.known_checkout_order(&checkout_id).await?.ok_or_else(|| {
                StoreError::Backend(format!("checkout {checkout_id}: claim lost and not found"))
            });
        }
        self.index_order(&order).await?;
        Ok(CheckoutOrder::Created(order))
    }

    /// What the order service knows of a checkout: its order (index entries written again,
    /// so that a create that failed after its claim is listed once retried) or its abort.
    async fn known_checkout_order(&self, checkout_id: &str) -> Result<Option<CheckoutOrder>, StoreError> {
        match self.order_checkout(checkout_id).await? {
            Some((state, Some(order_id))) if state == "ordered" => {
                let order = self.order(&order_id).await?;
                self.index_order(&order).await?;
                Ok(Some(CheckoutOrder::Existing(order)))
            }
            Some(_) => Ok(Some(CheckoutOrder::Aborted)),
            None => Ok(None),
        }
    }

    pub(super) async fn abort_checkout(&self, checkout_id: &str) -> Result<Option<Order>, StoreError> {
        let claim = self
            .lwt(
                &self.st().claim_order_checkout,
                (checkout_id, None::<String>, "aborted"),
            )
            .await?;
        if claim.applied {
            return Ok(None);
        }
        match self.known_checkout_order(checkout_id).await? {
            Some(CheckoutOrder::Existing(order) | CheckoutOrder::Created(order)) => Ok(Some(order)),
            _ => Ok(None),
        }
    }

    pub(super) async fn cancel_order(
        &self,
        id: &str,
        expected: &str,
        cancelled: &str,
        at: f64,
    ) -> Result<Order, StoreError> {
        let before = self.order(id).await?;
        // The restock is journaled before the status changes: a failure in between leaves a
        // pending restock of an order that is not cancelled, which the restock worker checks
        // (it gives stock back only for a cancelled order) and retires.
        if let Some(checkout_id) = &before.checkout_id {
            let st = self.st();
            self.write(&st.index_restock, (bucket_of(at), at, id)).await?;
            self.lwt(&st.insert_restock, (id, checkout_id, at)).await?;
        }
        self.set_order_status(id, expected, cancelled, at).await
    }

    pub(super) async fn pending_restocks(&self, limit: u32) -> Result<Vec<PendingRestock>, StoreError> {
        let st = self.st();
        let now = super::now_seconds();
        let mut pending = Vec::new();
        for back in (0..BUCKETS_SCANNED).rev() {
            let ids = self
                .rows::<(String,)>(&st.restocks_in_bucket, (bucket_of(now) - back,))
                .await?;
            for (order_id,) in ids {
                let Some((order_id, checkout_id, done)) = self
                    .row::<(String, String, Option<bool>)>(&st.restock, (&order_id,))
                    .await?
                else {
                    continue;
                };
                if done == Some(true) {
                    continue;
                }
                // Journaled by a cancel that then lost its race: nothing to give back.
                match self.order(&order_id).await {
                    Ok(order) if order.status == "CANCELLED" => {}
                    Ok(order) if matches!(order.status.as_str(), "CREATED" | "PAID") => continue,
                    _ => {
                        self.restock_done(&order_id).await?;
                        continue;
                    }
                }
                pending.push(PendingRestock {
                    order_id,
                    checkout_id,
                });
                if pending.len() >= limit as usize {
                    return Ok(pending);
                }
            }
        }
        Ok(pending)
    }

    pub(super) async fn restock_done(&self, order_id: &str) -> Result<(), StoreError> {
        self.lwt(&self.st().finish_restock, (order_id,)).await.map(|_| ())
    }

    // ---- stock reservations ----------------------------------------------------------------

    /// The reservation row: `(state, items, at)`.
    async fn reservation(&self, id: &str) -> Result<Option<(String, String, f64)>, StoreError> {
        self.row::<(String, String, f64)>(&self.st().reservation, (id,))
            .await
    }

    /// Moves a reservation from `from` to `to`; whether it applied.
    async fn move_reservation(&self, id: &str, from: &str, to: &str) -> Result<bool, StoreError> {
        let outcome = self
            .lwt(&self.st().move_reservation, (to, super::now_seconds(), id, from))
            .await?;
        Ok(outcome.applied)
    }

    pub(super) async fn reserve_stock(
        &self,
        id: &str,
        items: &[(String, i64)],
    ) -> Result<Reservation, StoreError> {
        let st = self.st();
        let encoded = serde_json::to_string(items).map_err(json_error)?;
        // `taking` claims the id before any stock moves, so two reserves of one id never both
        // take; `taken` once every line is taken.
        let claim = self
            .lwt(
                &st.insert_reservation,
                (id, &encoded, "taking", super::now_seconds()),
            )
            .await?;
        if !claim.applied {
            return match current_text(&claim, "state").as_deref() {
                Some("taken") => Ok(Reservation::AlreadyTaken),
                Some("released") | Some("releasing") => Ok(Reservation::Released),
                _ => Err(StoreError::Backend(format!("reservation {id} is being taken"))),
            };
        }
        if let Err(e) = self.decrement_stock(items).await {
            // Nothing taken: the id is free again, as on SQLite.
            self.lwt(&st.drop_reservation, (id, "taking")).await?;
            return Err(e);
        }
        if self.move_reservation(id, "taking", "taken").await? {
            Ok(Reservation::Taken)
        } else {
            Err(StoreError::Backend(format!(
                "reservation {id} changed while taken"
            )))
        }
    }

    pub(super) async fn release_reservation(&self, id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let st = self.st();
        let Some((state, items, at)) = self.reservation(id).await? else {
            // Never taken: refused for good, so that a reserve still in flight takes nothing.
            let claim = self
                .lwt(
                    &st.insert_reservation,
                    (id, "[]", "released", super::now_seconds()),
                )
                .await?;
            if claim.applied {
                return Ok(Vec::new());
            }
            return Box::pin(self.release_reservation(id)).await;
        };
        let items: Vec<(String, i64)> = serde_json::from_str(&items).map_err(json_error)?;
        match state.as_str() {
            "released" => Ok(Vec::new()),
            "taking" if super::now_seconds() - at > TAKING_GRACE_SECONDS => {
                // A take that died half-way: which lines it took is unknown; refusing the id is
                // all that is safe (see the module documentation).
                self.move_reservation(id, "taking", "released").await?;
                Ok(Vec::new())
            }
            "taking" => Err(StoreError::Backend(format!("reservation {id} is being taken"))),
            "releasing" if super::now_seconds() - at > TAKING_GRACE_SECONDS => {
                // A give-back that died half-way: which lines it restocked is unknown; never
                // restocking twice is what is promised, so it is closed as it is.
                self.move_reservation(id, "releasing", "released").await?;
                Ok(Vec::new())
            }
            "releasing" => Err(StoreError::Backend(format!("reservation {id} is being released"))),
            other if other != "taken" => Err(StoreError::Backend(format!("reservation {id} is {other:?}"))),
            _ => {
                // `releasing` claims the give-back, so two releases never both restock.
                if !self.move_reservation(id, "taken", "releasing").await? {
                    return Box::pin(self.release_reservation(id)).await;
                }
                let mut given_back = Vec::with_capacity(items.len());
                for (product, quantity) in items {
                    match self
                        .cas_stock(&product, |stock| Ok(stock.saturating_add(quantity)))
                        .await
                    {
                        Ok(_) => given_back.push((product, quantity)),
                        Err(StoreError::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
                self.move_reservation(id, "releasing", "released").await?;
                Ok(given_back)
            }
        }
    }

    // ---- checkout journal ------------------------------------------------------------------

    pub(super) async fn begin_checkout(&self, checkout: &Checkout) -> Result<(), StoreError> {
        let st = self.st();
        // Index entries first (they expire), then the row: a failure in between leaves an entry
        // the sweep skips until it expires, never a row the sweep cannot find.
        self.batch(vec![
            (
                &st.index_checkout_time,
                vec![
                    CqlValue::BigInt(bucket_of(checkout.created_at)),
                    CqlValue::Double(checkout.created_at),
                    text(&checkout.id),
                ],
            ),
            (
                &st.index_checkout_user,
                vec![text(&checkout.user_id), text(&checkout.id)],
            ),
        ])
        .await?;
        let items = serde_json::to_string(&checkout.items).map_err(json_error)?;
        let inserted = self
            .lwt(
                &st.insert_checkout,
                (
                    &checkout.id,
                    &checkout.user_id,
                    items,
                    &checkout.state,
                    &checkout.order,
                    checkout.created_at,
                    checkout.updated_at,
                ),
            )
            .await?;
        if !inserted.applied {
            return Err(StoreError::Conflict("checkout id already taken".into()));
        }
        Ok(())
    }

    pub(super) async fn checkout(&self, id: &str) -> Result<Checkout, StoreError> {
        self.row::<CheckoutRow>(&self.st().checkout, (id,))
            .await?
            .map(checkout_from)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    pub(super) async fn advance_checkout(
        &self,
        id: &str,
        from: &str,
        to: &str,
        order: Option<&str>,
        at: f64,
    ) -> Result<(), StoreError> {
        let current = self.checkout(id).await?;
        if current.state != from {
            return Err(StoreError::Stale {
                current: current.state,
            });
        }
        if to == checkout_state::DONE {
            // Before the transition, and by deletion (which repeats harmlessly): a failure in
            // between leaves the checkout `ordered`, and the sweep removes the lines again.
            for item in &current.items {
                self.write(&self.st().delete_cart_item, (&current.user_id, &item.product_id))
                    .await?;
            }
            if self.cart(&current.user_id).await?.is_empty() {
                self.forget_cart_activity(&current.user_id).await?;
            }
        }
        let order = order.map(str::to_string).or(current.order);
        let outcome = self
            .lwt(&self.st().move_checkout, (to, order, at, id, from))
            .await?;
        if outcome.applied {
            return Ok(());
        }
        match current_text(&outcome, "state") {
            Some(current) => Err(StoreError::Stale { current }),
            None => Err(StoreError::NotFound),
        }
    }

    pub(super) async fn unfinished_checkouts(
        &self,
        user_id: Option<&str>,
        before: f64,
        limit: u32,
    ) -> Result<Vec<Checkout>, StoreError> {
        let st = self.st();
        let ids: Vec<String> = match user_id {
            Some(user) => self
                .rows::<(String,)>(&st.user_checkouts, (user,))
                .await?
                .into_iter()
                .map(|(id,)| id)
                .collect(),
            None => {
                let mut ids = Vec::new();
                for back in (0..BUCKETS_SCANNED).rev() {
                    let rows = self
                        .rows::<(String,)>(&st.checkouts_in_bucket, (bucket_of(before) - back, before))
                        .await?;
                    ids.extend(rows.into_iter().map(|(id,)| id));
                }
                ids
            }
        };
        let mut unfinished = Vec::new();
        for id in ids {
            match self.checkout(&id).await {
                Ok(c) if !checkout_state::is_final(&c.state) && c.created_at < before => unfinished.push(c),
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
            if unfinished.len() >= limit as usize {
                break;
            }
        }
        unfinished.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        Ok(unfinished)
    }

    pub(super) async fn order(&self, id: &str) -> Result<Order, StoreError> {
        self.row::<OrderRow>(&self.st().order, (id,))
            .await?
            .map(order_from)
            .ok_or(StoreError::NotFound)
    }

    /// The page's keys from `orders_by_user` (newest first), then its orders in one
    /// `SELECT ... WHERE id IN ?` (at most 100 keys, ScyllaDB's default cap on partition keys
    /// per query): two statements per page whatever its size, none per order.
    pub(super) async fn user_orders(
        &self,
        user_id: &str,
        page: u32,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let ids = self
            .page_of_keys(&self.st().user_order_ids, (user_id,), page, limit)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.rows::<OrderRow>(&self.st().orders_by_ids, (&ids,)).await?;
        // IN answers in token order: put the orders back in the listing's order. A key whose
        // order row is missing (a create that failed half-way) is skipped.
        let mut found: std::collections::HashMap<String, Order> = rows
            .into_iter()
            .map(order_from)
            .map(|o| (o.id.clone(), o))
            .collect();
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// The keys of one page (from 1, of `limit` keys) of a listing `statement` reads (one
    /// text key per row, in clustering order). CQL has no OFFSET: the keys before the page are
    /// read driver page by driver page ([`KEY_PAGE`]) and skipped, so memory stays one driver
    /// page; the work grows with the page number, not with the listing's length.
    async fn page_of_keys(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow + Clone,
        page: u32,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let mut skip = u64::from(page.saturating_sub(1)) * u64::from(limit);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut ids = Vec::new();
        if limit == 0 {
            return Ok(ids);
        }
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .inner
                .session
                .execute_single_page(statement, values.clone(), paging)
                .await
                .map_err(backend)?;
            let rows = result.into_rows_result().map_err(backend)?;
            for row in rows.rows::<(String,)>().map_err(backend)? {
                let (id,) = row.map_err(backend)?;
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                ids.push(id);
                if ids.len() >= limit {
                    return Ok(ids);
                }
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(state) => paging = state,
                std::ops::ControlFlow::Break(()) => return Ok(ids),
            }
        }
    }

    pub(super) async fn orders_in_status(&self, status: &str, limit: u32) -> Result<Vec<Order>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids = self
            .rows::<(String,)>(&self.st().order_ids_in_status, (status, cql_limit(limit.into())))
            .await?;
        let ids = ids.into_iter().map(|(id,)| id).collect();
        let orders = self
            .fetch_each(ids, |store, id| async move { store.order(&id).await })
            .await?;
        // An entry whose order has left this status (a move that failed between the row and
        // its index entries) is cleaned here, and the order's entry in its status written, so
        // that no reader skips it forever.
        let st = self.st();
        let mut current = Vec::with_capacity(orders.len());
        for order in orders {
            if order.status == status {
                current.push(order);
                continue;
            }
            let at = CqlValue::Double(order.created_at);
            self.batch(vec![
                (
                    &st.index_order_status,
                    vec![text(&order.status), at.clone(), text(&order.id)],
                ),
                (&st.unindex_order_status, vec![text(status), at, text(&order.id)]),
            ])
            .await?;
        }
        Ok(current)
    }

    pub(super) async fn set_order_status(
        &self,
        id: &str,
        expected: &str,
        status: &str,
        at: f64,
    ) -> Result<Order, StoreError> {
        let st = self.st();
        let outcome = self
            .lwt(&st.set_order_status, (status, vec![(status, at)], id, expected))
            .await?;
        if !outcome.applied {
            return match outcome.current("status") {
                Some(CqlValue::Text(current)) => Err(StoreError::Stale {
                    current: current.clone(),
                }),
                Some(other) => Err(StoreError::Backend(format!("status of order {id} is {other:?}"))),
                None => Err(StoreError::NotFound),
            };
        }
        let order = self.order(id).await?;
        if expected != status {
            let at = CqlValue::Double(order.created_at);
            self.batch(vec![
                (
                    &st.unindex_order_status,
                    vec![text(expected), at.clone(), text(id)],
                ),
                (&st.index_order_status, vec![text(status), at, text(id)]),
            ])
            .await?;
        }
        Ok(order)
    }

    /// Drops this store's keyspace (the integration tests' clean-up).
    #[cfg(test)]
    pub(super) async fn drop_keyspace(&self) -> Result<(), StoreError> {
        let cql = format!("DROP KEYSPACE IF EXISTS {}", self.inner.keyspace);
        self.inner
            .session
            .query_unpaged(cql, ())
            .await
            .map(|_| ())
            .map_err(backend)
    }
}

/// The table a statement reads or writes (for the tests' schema checks).
#[cfg(test)]
fn table_of(cql: &str) -> Option<&str> {
    let words: Vec<&str> = cql.split_whitespace().collect();
    let after = |keyword: &str| {
        words
            .iter()
            .position(|w| w.eq_ignore_ascii_case(keyword))
            .and_then(|i| words.get(i + 1).copied())
    };
    after("FROM")
        .or_else(|| after("INTO"))
        .or_else(|| after("UPDATE"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn nodes_are_parsed_with_default_ports_and_errors_are_clear() {
        assert_eq!(
            parse_nodes("10.0.0.1:9042, db2 ,[::1]:19042,,[fe80::1]").unwrap(),
            ["10.0.0.1:9042", "db2:9042", "[::1]:19042", "[fe80::1]:9042"]
        );
        for bad in [
            "host:",
            "host:port",
            ":9042",
            "host:70000",
            "[::1",
            "[::1]x",
            " , ",
            "host:0",
        ] {
            let err = parse_nodes(bad).unwrap_err();
            assert!(
                matches!(&err, StoreError::Backend(m) if m.contains(NODES_ENV)),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn configuration_selects_scylla_only_when_nodes_are_given() {
        assert_eq!(
            ScyllaConfig::from_values(None, Some("x"), Some("3")).unwrap(),
            None
        );
        assert_eq!(ScyllaConfig::from_values(Some("  "), None, None).unwrap(), None);
        assert_eq!(
            ScyllaConfig::from_values(Some("a:1,b:2"), None, None).unwrap(),
            Some(ScyllaConfig {
                nodes: vec!["a:1".into(), "b:2".into()],
                keyspace: "store".into(),
                replication_factor: 1,
                open_timeout: OPEN_TIMEOUT,
            })
        );
        let custom = ScyllaConfig::from_values(Some("a"), Some("Shop_2"), Some("3"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (custom.keyspace.as_str(), custom.replication_factor),
            ("shop_2", 3)
        );
        for (keyspace, rf) in [
            ("2shop", "1"),
            ("shop; DROP", "1"),
            ("store", "0"),
            ("store", "x"),
        ] {
            assert!(
                ScyllaConfig::from_values(Some("a"), Some(keyspace), Some(rf)).is_err(),
                "{keyspace} {rf}"
            );
        }
        assert!(parse_keyspace(&"k".repeat(49)).is_err());
    }

    #[test]
    fn schema_statements_create_only_if_missing() {
        for scylla in [true, false] {
            let cql = create_keyspace_cql("store", 3, scylla);
            assert!(
                cql.starts_with("CREATE KEYSPACE IF NOT EXISTS store WITH replication"),
                "{cql}"
            );
            assert!(cql.contains("'replication_factor': 3}"), "{cql}");
            assert_eq!(cql.contains("tablets"), scylla, "{cql}");
        }
        for table in TABLES {
            assert!(table.starts_with("CREATE TABLE IF NOT EXISTS "), "{table}");
        }
    }

    #[test]
    fn cart_activity_is_bucketed_by_time_and_never_deleted() {
        assert_eq!(idle_bucket(0.0), 0);
        assert_eq!(idle_bucket(IDLE_BUCKET_SECONDS - 0.001), 0);
        assert_eq!(idle_bucket(IDLE_BUCKET_SECONDS), 1);
        assert_eq!(idle_bucket(-0.5), -1, "before the epoch (tests) still orders");
        assert_eq!(idle_bucket(1_800_000_000.0), 3_000_000);
        assert!(
            f64::from(IDLE_TTL_SECONDS) >= 7.0 * 24.0 * 3600.0 + IDLE_BUCKET_SECONDS,
            "entries outlive a week's abandonment time"
        );
        // The time-bucketed table is append-only: TTLs remove its rows, never a DELETE, and
        // every read names one bucket.
        for (name, cql) in STATEMENTS {
            if table_of(cql) == Some("idle_cart_buckets") {
                assert!(
                    !cql.starts_with("DELETE") && !cql.starts_with("UPDATE"),
                    "{name}: {cql}"
                );
                if cql.starts_with("INSERT") {
                    assert!(cql.contains("USING TTL ?"), "{name}: {cql}");
                } else {
                    assert!(cql.contains("WHERE bucket = ?"), "{name}: {cql}");
                }
            }
        }
        assert!(STATEMENTS.iter().all(|(_, cql)| !cql.contains("idle_carts ")));
    }

    #[test]
    fn statements_use_keys_only_and_known_tables() {
        let tables: HashSet<&str> = TABLES
            .iter()
            .map(|t| t.split_whitespace().nth(5).expect("a table name"))
            .collect();
        assert_eq!(tables.len(), TABLES.len(), "one CREATE per table");
        let mut names = HashSet::new();
        for (name, cql) in STATEMENTS {
            assert!(names.insert(*name), "{name} twice");
            assert!(
                !cql.to_ascii_uppercase().contains("ALLOW FILTERING"),
                "{name}: {cql}"
            );
            let table = table_of(cql).unwrap_or_else(|| panic!("{name}: no table in {cql}"));
            assert!(
                tables.contains(table) || table == "system.local",
                "{name}: {table}"
            );
            // Each read names its partition key; a whole-table scan would have no WHERE.
            if cql.starts_with("SELECT") || cql.starts_with("DELETE") || cql.starts_with("UPDATE") {
                assert!(cql.contains(" WHERE "), "{name}: {cql}");
            }
        }
        // Every row whose values are compared and set is written only through Paxos.
        for (name, cql) in STATEMENTS {
            let table = table_of(cql).unwrap();
            let writes = !cql.starts_with("SELECT");
            if writes && ["products", "orders", "cart_activity"].contains(&table) {
                assert!(cql.contains(" IF "), "{name} writes {table} without LWT: {cql}");
                assert!(!is_idempotent(cql), "{name}");
            }
        }
        assert!(is_idempotent(
            STATEMENTS.iter().find(|(n, _)| *n == "cart").unwrap().1
        ));
    }
}
